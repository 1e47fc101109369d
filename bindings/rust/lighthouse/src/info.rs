//! The sizes of a finalized plan: its parameters after defaults, the buffer sizes it reports,
//! and the element counts of every tensor the entry points take.

use lighthouse_sys as sys;

use crate::error::{check, Error, Result, Status};
use crate::types::{Backend, Dtype, Layout, Mode};

/// The parameters (after defaults) and buffer sizes of a finalized plan. Sizes are in elements
/// unless the name says bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanInfo {
    pub batch: usize,
    pub seq_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub dtype: Dtype,
    pub layout: Layout,
    pub mode: Mode,
    pub levels: usize,
    pub pooling: usize,
    pub topk: usize,
    pub softmax_scale: f64,
    pub backend: Backend,
    /// S_sel: entries kept per (batch, head); N in dense mode.
    pub subseq_len: usize,
    /// S_total: pyramid entries per (batch, head); N in dense mode.
    pub pyramid_len: usize,
    pub saved_bytes: usize,
    pub fwd_workspace_bytes: usize,
    pub bwd_workspace_bytes: usize,
    pub stage_workspace_bytes: usize,
    /// Tokens of this rank's q, k, v (and out, gradients): seq_len / world (seq_len without a
    /// ring).
    pub local_seq_len: usize,
    /// C: sequence chunks the plan holds (2 on a ring, else 1).
    pub chunks: usize,
    /// Bytes of the workspace of `lh_attention_forward` / `lh_attention_backward`.
    pub attention_workspace_bytes: usize,
    /// Ranks of the plan's ring (1 without a ring).
    pub world: usize,
    /// This plan's rank on its ring (0 without a ring).
    pub rank: usize,
}

impl PlanInfo {
    pub(crate) fn read(plan: *const sys::lh_plan) -> Result<PlanInfo> {
        let param = |p: sys::lh_param| -> Result<i64> {
            let mut value = 0;
            // SAFETY: live plan, valid out pointer.
            check(unsafe { sys::lh_plan_get_param_i64(plan, p, &mut value) })?;
            Ok(value)
        };
        let query = |q: sys::lh_query| -> Result<i64> {
            let mut value = 0;
            // SAFETY: live finalized plan, valid out pointer.
            check(unsafe { sys::lh_plan_get_i64(plan, q, &mut value) })?;
            Ok(value)
        };
        let size = |value: i64, what: &str| -> Result<usize> {
            usize::try_from(value).map_err(|_| {
                Error::new(
                    Status::Internal,
                    format!("the library reported {what} = {value}"),
                )
            })
        };
        let mut scale = 0.0;
        // SAFETY: live plan, valid out pointer.
        check(unsafe {
            sys::lh_plan_get_param_f64(plan, sys::LH_PARAM_SOFTMAX_SCALE, &mut scale)
        })?;
        Ok(PlanInfo {
            batch: size(param(sys::LH_PARAM_BATCH)?, "batch")?,
            seq_len: size(param(sys::LH_PARAM_SEQ_LEN)?, "seq_len")?,
            heads: size(param(sys::LH_PARAM_HEADS)?, "heads")?,
            kv_heads: size(param(sys::LH_PARAM_KV_HEADS)?, "kv_heads")?,
            head_dim: size(param(sys::LH_PARAM_HEAD_DIM)?, "head_dim")?,
            dtype: Dtype::from_raw(param(sys::LH_PARAM_DTYPE)? as sys::lh_dtype)?,
            layout: Layout::from_raw(param(sys::LH_PARAM_LAYOUT)? as sys::lh_layout)?,
            mode: Mode::from_raw(param(sys::LH_PARAM_MODE)? as sys::lh_mode)?,
            levels: size(param(sys::LH_PARAM_LEVELS)?, "levels")?,
            pooling: size(param(sys::LH_PARAM_POOLING)?, "pooling")?,
            topk: size(param(sys::LH_PARAM_TOPK)?, "topk")?,
            softmax_scale: scale,
            backend: Backend::from_raw(query(sys::LH_QUERY_BACKEND)? as sys::lh_backend)?,
            subseq_len: size(query(sys::LH_QUERY_SUBSEQ_LEN)?, "SUBSEQ_LEN")?,
            pyramid_len: size(query(sys::LH_QUERY_PYRAMID_LEN)?, "PYRAMID_LEN")?,
            saved_bytes: size(query(sys::LH_QUERY_SAVED_BYTES)?, "SAVED_BYTES")?,
            fwd_workspace_bytes: size(
                query(sys::LH_QUERY_FWD_WORKSPACE_BYTES)?,
                "FWD_WORKSPACE_BYTES",
            )?,
            bwd_workspace_bytes: size(
                query(sys::LH_QUERY_BWD_WORKSPACE_BYTES)?,
                "BWD_WORKSPACE_BYTES",
            )?,
            stage_workspace_bytes: size(
                query(sys::LH_QUERY_STAGE_WORKSPACE_BYTES)?,
                "STAGE_WORKSPACE_BYTES",
            )?,
            local_seq_len: size(query(sys::LH_QUERY_LOCAL_SEQ_LEN)?, "LOCAL_SEQ_LEN")?,
            chunks: size(query(sys::LH_QUERY_CHUNKS)?, "CHUNKS")?,
            attention_workspace_bytes: size(
                query(sys::LH_QUERY_ATTENTION_WORKSPACE_BYTES)?,
                "ATTENTION_WORKSPACE_BYTES",
            )?,
            world: size(query(sys::LH_QUERY_WORLD)?, "WORLD")?,
            rank: size(query(sys::LH_QUERY_RANK)?, "RANK")?,
        })
    }

    /// Elements of q, out, dout and dq: B*N*H*D (N = local_seq_len: this rank's shard on a
    /// ring).
    pub fn q_len(&self) -> usize {
        self.batch * self.local_seq_len * self.heads * self.head_dim
    }

    /// Elements of k, v, dk and dv: B*N*Hkv*D (N = local_seq_len).
    pub fn kv_len(&self) -> usize {
        self.batch * self.local_seq_len * self.kv_heads * self.head_dim
    }

    /// S_c: sub-sequence entries per chunk of the attention step (subseq_len / chunks).
    pub fn chunk_subseq_len(&self) -> usize {
        self.subseq_len / self.chunks.max(1)
    }

    /// Elements of lse [C, B, H, S_c] (= B*H*S_sel).
    pub fn lse_len(&self) -> usize {
        self.batch * self.heads * self.subseq_len
    }

    /// Elements of scores_q [B, H, S_total].
    pub fn scores_q_len(&self) -> usize {
        self.batch * self.heads * self.pyramid_len
    }

    /// Elements of scores_k [B, Hkv, S_total].
    pub fn scores_k_len(&self) -> usize {
        self.batch * self.kv_heads * self.pyramid_len
    }

    /// Elements of the scores a `Scorer::External` forward takes: scores_q [C, B, H, S_total]
    /// (every local chunk's pyramid).
    pub fn forward_scores_q_len(&self) -> usize {
        self.chunks * self.scores_q_len()
    }

    /// Elements of scores_k [C, B, Hkv, S_total] of a `Scorer::External` forward.
    pub fn forward_scores_k_len(&self) -> usize {
        self.chunks * self.scores_k_len()
    }

    /// Elements of indices [B, H, S_sel].
    pub fn indices_len(&self) -> usize {
        self.batch * self.heads * self.subseq_len
    }

    /// Elements of q_sel, k_sel, v_sel and o_sel: [B, H, S_sel, D] for the stage entry points,
    /// [C, B, H, S_c, D] (the same count) for the attention step.
    pub fn selected_len(&self) -> usize {
        self.indices_len() * self.head_dim
    }
}
