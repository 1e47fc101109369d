# Tests of Lighthouse.jl on the CPU backend. Run where Julia exists:
#   LIGHTHOUSE_LIB=<build>/liblighthouse.so julia --project=bindings/julia -e 'using Pkg; Pkg.test()'
# Golden vectors: ENV["LIGHTHOUSE_GOLDEN_DIR"], else <repo>/../shared/golden.

using Lighthouse
using Test

const GOLDEN = get(ENV, "LIGHTHOUSE_GOLDEN_DIR",
                   joinpath(@__DIR__, "..", "..", "..", "..", "shared", "golden"))

# A raw little-endian file of C shape `cshape` as a Julia array of the reversed shape.
function golden(name, T, cshape...)
    a = Array{T}(undef, reverse(cshape)...)
    open(io -> read!(io, a), joinpath(GOLDEN, name))
    return ltoh.(a)
end

relerr(got, want) = sqrt(sum(abs2, Float64.(got) .- Float64.(want)) / sum(abs2, Float64.(want)))

const G1 = (B = 1, N = 2048, H = 2, D = 32, levels = 2, pooling = 4, topk = 128, S_sel = 1024)

@testset "Lighthouse.jl" begin
    @testset "golden g1" begin
        c = G1
        ctx = Context(:cpu)
        plan = Plan(ctx; batch = c.B, seq_len = c.N, heads = c.H, head_dim = c.D,
                    levels = c.levels, pooling = c.pooling, topk = c.topk)
        i = info(plan)
        @test i.subseq_len == c.S_sel
        S_total = i.pyramid_len
        q = golden("g1.q.f32", Float32, c.B, c.N, c.H, c.D)        # (D, H, N, B)
        k = golden("g1.k.f32", Float32, c.B, c.N, c.H, c.D)
        v = golden("g1.v.f32", Float32, c.B, c.N, c.H, c.D)
        # out and dout are [B, H, N, D] in the golden files: (D, N, H, B) here, permuted to ours.
        want_out = permutedims(golden("g1.out.f32", Float32, c.B, c.H, c.N, c.D), (1, 3, 2, 4))
        dout = permutedims(golden("g1.dout.f32", Float32, c.B, c.H, c.N, c.D), (1, 3, 2, 4))
        sq_want = golden("g1.scores_qk.f32", Float32, c.B, c.H, S_total)
        sk_want = golden("g1.scores_kq.f32", Float32, c.B, c.H, S_total)
        want_indices = golden("g1.indices.i32", Int32, c.B, c.H, c.S_sel)

        sq = zeros(Float32, S_total, c.H, c.B); sk = zeros(Float32, S_total, c.H, c.B)
        scores!(plan, q, k, sq, sk)
        @test relerr(sq, sq_want) < 1e-5
        indices = zeros(Int32, c.S_sel, c.H, c.B)
        select!(plan, sq, sk, indices)
        @test indices == want_indices
        fill!(indices, -1)
        select!(plan, sq_want, sk_want, indices)
        @test indices == want_indices

        out = fill(NaN32, size(q)); saved = Saved(plan)
        forward!(plan, q, k, v, out, saved)
        @test relerr(out, want_out) < 1e-5
        dq = similar(q); dk = similar(k); dv = similar(v)
        backward!(plan, q, k, v, out, dout, saved, dq, dk, dv)
        @test relerr(dq, golden("g1.dq.f32", Float32, c.B, c.N, c.H, c.D)) < 1e-5
        @test relerr(dk, golden("g1.dk.f32", Float32, c.B, c.N, c.H, c.D)) < 1e-5
        @test relerr(dv, golden("g1.dv.f32", Float32, c.B, c.N, c.H, c.D)) < 1e-5
        close(plan); close(ctx)
    end

    @testset "errors carry status and message" begin
        ctx = Context(:cpu)
        base = (seq_len = 2048, heads = 2, head_dim = 32, levels = 2, pooling = 4, topk = 128)
        for (status, change) in [(Lighthouse.LH_ERROR_INVALID_VALUE, (head_dim = 0,)),
                                 (Lighthouse.LH_ERROR_HEADS_MISMATCH, (heads = 3, kv_heads = 2)),
                                 (Lighthouse.LH_ERROR_POOLING, (pooling = 3,)),
                                 (Lighthouse.LH_ERROR_TOPK, (topk = 100,)),
                                 (Lighthouse.LH_ERROR_SEQ_DIVISIBILITY, (seq_len = 2050,)),
                                 (Lighthouse.LH_ERROR_TILE_TOO_SMALL, (seq_len = 512, topk = 512)),
                                 (Lighthouse.LH_ERROR_LEVELS, (levels = 9,)),
                                 (Lighthouse.LH_ERROR_UNSUPPORTED_DTYPE, (dtype = :float16,))]
            err = try
                Plan(ctx; merge(base, change)...); nothing
            catch e
                e
            end
            @test err isa LighthouseError
            @test err.status == status
            @test err.name == Lighthouse.status_name(status)
            @test !isempty(err.message)
        end
        # Every status code has its C name.
        for code in Lighthouse.LH_ERROR_NULL_POINTER:Lighthouse.LH_ERROR_INTERNAL
            @test startswith(Lighthouse.status_name(code), "LH_ERROR_")
        end
        plan = Plan(ctx; base...)
        q = zeros(Float32, 32, 2, 2048, 1)
        @test_throws LighthouseError forward!(plan, q[:, :, 1:1024, :], q, q, similar(q), Saved(plan))
        @test_throws LighthouseError backward!(plan, q, q, q, nothing, q, Saved(plan),
                                               similar(q), similar(q), similar(q))
        close(ctx)   # closing the context first is fine: it goes when its last plan goes
        @test live_handles()[1] >= 1
        close(plan)
    end

    @testset "handles are freed" begin
        GC.gc(); GC.gc()
        before = live_handles()
        for round in 1:50
            ctx = Context(:cpu)
            plans = [Plan(ctx; seq_len = 512, heads = 1, head_dim = 8, levels = 2, pooling = 2,
                          topk = 128) for _ in 1:3]
            @test_throws LighthouseError Plan(ctx; seq_len = 512, heads = 1, head_dim = 8, topk = 100)
            isodd(round) && foreach(close, plans)
            close(ctx)   # destroyed now, or when the GC frees the last plan
        end
        GC.gc(); GC.gc(); GC.gc()
        @test live_handles() == before
    end
end
