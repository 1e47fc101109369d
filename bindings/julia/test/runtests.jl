# Tests of Lighthouse.jl on the CPU backend. Run where Julia exists:
#   LIGHTHOUSE_LIB=<build>/liblighthouse.so julia --project=bindings/julia -e 'using Pkg; Pkg.test()'
# Golden vectors: ENV["LIGHTHOUSE_GOLDEN_DIR"], else <repo>/tests/golden.

using Lighthouse
using Test
using ChainRulesCore   # loads the package's ChainRulesCore extension (the rrule of attention)

const GOLDEN = get(ENV, "LIGHTHOUSE_GOLDEN_DIR",
                   joinpath(@__DIR__, "..", "..", "..", "tests", "golden"))

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
                                 (Lighthouse.LH_ERROR_UNSUPPORTED_DTYPE, (dtype = :float16,)),
                                 (Lighthouse.LH_ERROR_UNSUPPORTED, (stage_timing = true,))]
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
        @test_throws LighthouseError stage_ms(plan, :scores)   # timing is off (and CPU has none)
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

    # The attention step, hooks and rings (docs/spec.md section 8) on the CPU backend.
    lh_kw = (seq_len = 2048, heads = 2, kv_heads = 1, head_dim = 16, levels = 2, pooling = 4,
             topk = 256)
    function fwd_bwd(plan, q, k, v, dout)
        out = similar(q); saved = Saved(plan)
        forward!(plan, q, k, v, out, saved)
        dq, dk, dv = similar(q), similar(k), similar(v)
        backward!(plan, q, k, v, out, dout, saved, dq, dk, dv)
        return out, dq, dk, dv
    end

    @testset "external scores reproduce the norm scorer" begin
        ctx = Context(:cpu)
        norm = Plan(ctx; lh_kw...)
        ext = Plan(ctx; scorer = :external, lh_kw...)
        i = info(norm)
        q = randn(Float32, 16, 2, 2048, 1); k = randn(Float32, 16, 1, 2048, 1)
        v = randn(Float32, 16, 1, 2048, 1); dout = randn(Float32, size(q))
        sq = zeros(Float32, i.pyramid_len, 2, 1); sk = zeros(Float32, i.pyramid_len, 1, 1)
        scores!(norm, q, k, sq, sk)
        want = fwd_bwd(norm, q, k, v, dout)
        out = similar(q); saved = Saved(ext)
        forward!(ext, q, k, v, out, saved; scores = (sq, sk))
        dq, dk, dv = similar(q), similar(k), similar(v)
        backward!(ext, q, k, v, out, dout, saved, dq, dk, dv)
        @test (out, dq, dk, dv) == want
        @test_throws LighthouseError forward!(ext, q, k, v, out, Saved(ext))
        @test_throws LighthouseError Plan(ctx; scorer = :dilated, lh_kw...)  # kv_heads != heads
        dil = Plan(ctx; scorer = :dilated, dilation = 8, merge(lh_kw, (kv_heads = 2,))...)
        @test info(dil).pyramid_len == i.pyramid_len
        close(dil); close(ext); close(norm); close(ctx)
    end

    @testset "attention step reproduces forward!" begin
        ctx = Context(:cpu)
        plan = Plan(ctx; lh_kw...)
        i = info(plan)
        @test (i.chunks, i.world, i.rank, i.local_seq_len) == (1, 1, 0, i.seq_len)
        q = randn(Float32, 16, 2, 2048, 1); k = randn(Float32, 16, 1, 2048, 1)
        v = randn(Float32, 16, 1, 2048, 1)
        want = similar(q); forward!(plan, q, k, v, want, Saved(plan))
        sq = zeros(Float32, i.pyramid_len, 2, 1); sk = zeros(Float32, i.pyramid_len, 1, 1)
        scores!(plan, q, k, sq, sk)
        idx = zeros(Int32, i.subseq_len, 2, 1); select!(plan, sq, sk, idx)
        qs, ks, vs = (zeros(Float32, attention_shape(i)) for _ in 1:3)
        gather!(plan, q, k, v, idx, qs, ks, vs)   # C = 1: the same memory order
        os = similar(qs); lse = zeros(Float32, lse_shape(i))
        attention_forward!(plan, qs, ks, vs, os, lse)
        out = similar(q); scatter!(plan, idx, os, out)
        @test relerr(out, want) < 1e-6
        dqs, dks, dvs = similar(qs), similar(ks), similar(vs)
        attention_backward!(plan, qs, ks, vs, os, lse, randn(Float32, size(qs)), dqs, dks, dvs)
        @test all(isfinite, dqs) && all(isfinite, dks) && all(isfinite, dvs)
        close(plan); close(ctx)
    end

    @testset "hooks" begin
        ctx = Context(:cpu)
        calls = Threads.Atomic{Int}(0)
        function library_forward(plan, q_sel, k_sel, v_sel, o_sel, lse, stream)
            Threads.atomic_add!(calls, 1)
            ws = zeros(UInt8, max(1, info(plan).attention_workspace_bytes))
            GC.@preserve ws unsafe_attention_forward!(plan, q_sel, k_sel, v_sel, o_sel, lse,
                                                      pointer(ws); stream = stream)
            return nothing
        end
        function library_backward(plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq, dk, dv, stream)
            ws = zeros(UInt8, max(1, info(plan).attention_workspace_bytes))
            GC.@preserve ws unsafe_attention_backward!(plan, q_sel, k_sel, v_sel, o_sel, lse,
                                                       do_sel, dq, dk, dv, pointer(ws);
                                                       stream = stream)
            return nothing
        end
        plain = Plan(ctx; lh_kw...)
        hooked = Plan(ctx; lh_kw..., attention_hooks = AttentionHooks(library_forward, library_backward))
        q = randn(Float32, 16, 2, 2048, 1); k = randn(Float32, 16, 1, 2048, 1)
        v = randn(Float32, 16, 1, 2048, 1); dout = randn(Float32, size(q))
        @test fwd_bwd(hooked, q, k, v, dout) == fwd_bwd(plain, q, k, v, dout)   # bit-identical
        @test calls[] == 1
        # A hook that throws: the exception comes back to the caller, not through C.
        throwing = Plan(ctx; lh_kw..., attention_hooks = AttentionHooks(
            (args...) -> error("hook failed on purpose"), library_backward))
        @test_throws ErrorException forward!(throwing, q, k, v, similar(q), Saved(throwing))
        # A hook that returns a status.
        refusing = Plan(ctx; lh_kw..., attention_hooks = AttentionHooks(
            (args...) -> Lighthouse.LH_ERROR_COMMUNICATION, library_backward))
        err = try forward!(refusing, q, k, v, similar(q), Saved(refusing)); nothing catch e; e end
        @test err isa LighthouseError && err.status == Lighthouse.LH_ERROR_COMMUNICATION
        foreach(close, (plain, hooked, throwing, refusing)); close(ctx)
    end

    @testset "rings" begin
        ctx = Context(:cpu)
        @test_throws LighthouseError Ring(0)
        err = try nccl_unique_id(ctx); nothing catch e; e end
        @test err isa LighthouseError && err.status == Lighthouse.LH_ERROR_UNSUPPORTED
        err = try Ring(ctx, zeros(UInt8, 128), 0, 1); nothing catch e; e end
        @test err isa LighthouseError && err.status == Lighthouse.LH_ERROR_UNSUPPORTED
        ring = Ring(2)
        kw = (seq_len = 2048, heads = 2, kv_heads = 1, head_dim = 16, levels = 2, pooling = 4,
              topk = 512)
        @test_throws LighthouseError Plan(ctx; kw..., ring = ring, rank = 2)
        # The two ranks block inside the library until both arrive: they need two threads.
        plans = nothing
        if Threads.nthreads() < 2
            @info "W = 2 run skipped: start Julia with -t 2"
        else
            try
                plans = [Plan(ctx; kw..., ring = ring, rank = r) for r in 0:1]
            catch e
                e isa LighthouseError && e.status == Lighthouse.LH_ERROR_UNSUPPORTED || rethrow()
                @info "the CPU backend does not run rings yet: W = 2 run skipped"
            end
        end
        if plans !== nothing
            # Everything the ranks use is allocated before their tasks start (see the README on
            # local rings and the garbage collector).
            function buffers(p, r)
                n = info(p).local_seq_len
                q = ones(Float32, 16, 2, n, 1) .* Float32(r + 1); kv = ones(Float32, 16, 1, n, 1)
                return (q = q, k = kv, v = copy(kv), dout = ones(Float32, size(q)),
                        out = similar(q), saved = Saved(p), dq = similar(q), dk = similar(kv),
                        dv = similar(kv))
            end
            runs = map(1:2) do _
                bufs = [buffers(plans[r + 1], r) for r in 0:1]
                tasks = map(0:1) do r
                    Threads.@spawn begin
                        p, b = plans[r + 1], bufs[r + 1]
                        forward!(p, b.q, b.k, b.v, b.out, b.saved)
                        backward!(p, b.q, b.k, b.v, b.out, b.dout, b.saved, b.dq, b.dk, b.dv)
                    end
                end
                foreach(wait, tasks)
                [(b.out, b.dq, b.dk, b.dv) for b in bufs]
            end
            @test runs[1] == runs[2]
            @test all(all(isfinite, x) for r in runs[1] for x in r)
            foreach(close, plans)
        end
        close(ring)
        @test Lighthouse.live_rings() == 0
        close(ctx)
    end

    @testset "functional form and its rrule" begin
        ctx = Context(:cpu)
        plan = Plan(ctx; lh_kw...)
        @test info(plan).dtype == :float32   # the CPU's dtype when none is given
        q = randn(Float32, 16, 2, 2048, 1); k = randn(Float32, 16, 1, 2048, 1)
        v = randn(Float32, 16, 1, 2048, 1); dout = randn(Float32, size(q))
        out, dq, dk, dv = fwd_bwd(plan, q, k, v, dout)
        @test attention(plan, q, k, v) == out
        out2, saved = attention_forward(plan, q, k, v)
        @test out2 == out && saved isa Saved{Vector{UInt8}}
        @test attention_backward(plan, q, k, v, out2, dout, saved) == (dq, dk, dv)
        # A cotangent that is not a plain Array (here a view) is made one first.
        @test attention_backward(plan, q, k, v, out2, view(dout, :, :, :, :), saved) ==
              (dq, dk, dv)

        @test Base.get_extension(Lighthouse, :LighthouseChainRulesCoreExt) !== nothing
        y, back = rrule(attention, plan, q, k, v)
        @test y == out
        grads = back(dout)
        @test grads[1] isa NoTangent && grads[2] isa NoTangent
        @test grads[3:5] == (dq, dk, dv)
        @test back(@thunk(dout))[3:5] == (dq, dk, dv)
        @test all(g isa ZeroTangent for g in back(ZeroTangent())[3:5])
        close(plan); close(ctx)
    end

    @testset "kernel precompilation" begin
        ctx = Context(:cpu)
        set_cache_dir!(ctx, mktempdir())
        kw = (heads = 2, head_dim = 64, levels = 2, pooling = 4)
        n = try
            precompile_kernels(ctx, "sm_90"; kw...)
        catch e
            e isa LighthouseError && e.status == Lighthouse.LH_ERROR_BACKEND_UNAVAILABLE || rethrow()
            @info "the library was built without its kernel compiler: precompilation skipped"
            nothing
        end
        if n !== nothing
            @test n > 0
            @test precompile_kernels(ctx, "sm_90"; kw...) == 0   # all cached now
            err = try precompile_kernels(ctx; kw..., dtype = :float32); nothing catch e; e end
            @test err isa LighthouseError && err.status == Lighthouse.LH_ERROR_UNSUPPORTED_DTYPE
        end
        close(ctx)
    end

    @testset "device description refusals" begin
        # Writing a description needs a GPU, and using one a file written on a GPU: only the
        # refusals run here.
        ctx = Context(:cpu)
        dir = mktempdir()
        set_cache_dir!(ctx, dir)
        path = joinpath(dir, "gpu.device")
        err = try save_device(ctx, path); nothing catch e; e end
        @test err isa LighthouseError && err.status == Lighthouse.LH_ERROR_UNSUPPORTED
        @test err isa LighthouseError && occursin("no GPU to describe", err.message)
        @test !isfile(path)
        # Every parameter a CUDA plan of this shape needs, so that only the file is missing.
        kw = (seq_len = 32768, heads = 2, head_dim = 64, dtype = :bfloat16, topk = 2048)
        err = try precompile_device(ctx, path; kw...); nothing catch e; e end
        @test err isa LighthouseError
        if err isa LighthouseError && err.status == Lighthouse.LH_ERROR_BACKEND_UNAVAILABLE
            @info "the library was built without its kernel compiler: precompilation skipped"
        elseif err isa LighthouseError
            @test err.status == Lighthouse.LH_ERROR_IO
            @test occursin("cannot open the device description", err.message)
            plan = Plan(ctx; seq_len = G1.N, heads = G1.H, head_dim = G1.D, levels = G1.levels,
                        pooling = G1.pooling, topk = G1.topk)
            err = try precompile_device(plan, path); nothing catch e; e end
            @test err isa LighthouseError && err.status == Lighthouse.LH_ERROR_IO
            close(plan)
        end
        close(ctx)
    end

    @testset "library path" begin
        # The variable ctest sets wins over any preference.
        haskey(ENV, "LIGHTHOUSE_LIB") && @test Lighthouse.library_path() == ENV["LIGHTHOUSE_LIB"]
        @test Lighthouse.version_matches()
    end
end
