//! Raw declarations of liblighthouse's C ABI, one for one with `ffi/include/lighthouse.h`.
//!
//! Everything here is `unsafe` and mirrors the header exactly; the safe API lives in the
//! `lighthouse` crate. C enums are declared as `c_int` aliases with constants (not Rust enums)
//! because the library may return a value this crate does not know yet, and a Rust enum holding
//! an unlisted value is undefined behaviour. `tests/bindings/check_bindings.py` (run by ctest)
//! fails when a prototype or constant here drifts from the header.
#![allow(non_camel_case_types)]
#![no_std]

use core::ffi::{c_char, c_int, c_void};
use core::marker::{PhantomData, PhantomPinned};

// ---- version ----------------------------------------------------------------------------------

pub const LH_VERSION_MAJOR: c_int = 0;
pub const LH_VERSION_MINOR: c_int = 1;
pub const LH_VERSION_PATCH: c_int = 0;
pub const LH_VERSION_NUMBER: c_int =
    LH_VERSION_MAJOR * 10000 + LH_VERSION_MINOR * 100 + LH_VERSION_PATCH;

/// The most pyramid levels a plan may have (level 0 included).
pub const LH_MAX_LEVELS: c_int = 8;

// ---- enumerations -----------------------------------------------------------------------------

pub type lh_status = c_int;
pub const LH_OK: lh_status = 0;
pub const LH_ERROR_NULL_POINTER: lh_status = 1;
pub const LH_ERROR_INVALID_VALUE: lh_status = 2;
pub const LH_ERROR_HEADS_MISMATCH: lh_status = 3;
pub const LH_ERROR_POOLING: lh_status = 4;
pub const LH_ERROR_TOPK: lh_status = 5;
pub const LH_ERROR_SEQ_DIVISIBILITY: lh_status = 6;
pub const LH_ERROR_TILE_TOO_SMALL: lh_status = 7;
pub const LH_ERROR_LEVELS: lh_status = 8;
pub const LH_ERROR_UNSUPPORTED_DTYPE: lh_status = 9;
pub const LH_ERROR_UNSUPPORTED: lh_status = 10;
pub const LH_ERROR_BAD_STATE: lh_status = 11;
pub const LH_ERROR_OUT_OF_HOST_MEMORY: lh_status = 12;
pub const LH_ERROR_OUT_OF_DEVICE_MEMORY: lh_status = 13;
pub const LH_ERROR_BACKEND_UNAVAILABLE: lh_status = 14;
pub const LH_ERROR_BAD_POINTER: lh_status = 15;
pub const LH_ERROR_COMPILE: lh_status = 16;
pub const LH_ERROR_DEVICE: lh_status = 17;
pub const LH_ERROR_CUDNN: lh_status = 18;
pub const LH_ERROR_COMMUNICATION: lh_status = 19;
pub const LH_ERROR_IO: lh_status = 20;
pub const LH_ERROR_INTERNAL: lh_status = 21;

pub type lh_backend = c_int;
pub const LH_BACKEND_AUTO: lh_backend = 0;
pub const LH_BACKEND_CPU: lh_backend = 1;
pub const LH_BACKEND_CUDA: lh_backend = 2;

pub type lh_dtype = c_int;
pub const LH_DTYPE_FLOAT32: lh_dtype = 0;
pub const LH_DTYPE_FLOAT16: lh_dtype = 1;
pub const LH_DTYPE_BFLOAT16: lh_dtype = 2;

pub type lh_layout = c_int;
pub const LH_LAYOUT_BNHD: lh_layout = 0;
pub const LH_LAYOUT_BHND: lh_layout = 1;

pub type lh_mode = c_int;
pub const LH_MODE_LIGHTHOUSE: lh_mode = 0;
pub const LH_MODE_DENSE: lh_mode = 1;

pub type lh_scorer = c_int;
pub const LH_SCORER_NORM: lh_scorer = 0;
pub const LH_SCORER_DILATED: lh_scorer = 1;
pub const LH_SCORER_EXTERNAL: lh_scorer = 2;

pub type lh_param = c_int;
pub const LH_PARAM_BATCH: lh_param = 0;
pub const LH_PARAM_SEQ_LEN: lh_param = 1;
pub const LH_PARAM_HEADS: lh_param = 2;
pub const LH_PARAM_KV_HEADS: lh_param = 3;
pub const LH_PARAM_HEAD_DIM: lh_param = 4;
pub const LH_PARAM_DTYPE: lh_param = 5;
pub const LH_PARAM_LAYOUT: lh_param = 6;
pub const LH_PARAM_LEVELS: lh_param = 7;
pub const LH_PARAM_POOLING: lh_param = 8;
pub const LH_PARAM_TOPK: lh_param = 9;
pub const LH_PARAM_MODE: lh_param = 10;
pub const LH_PARAM_SOFTMAX_SCALE: lh_param = 11;
pub const LH_PARAM_RECOMPUTE_SUBSEQ: lh_param = 12;
pub const LH_PARAM_STAGE_TIMING: lh_param = 13;
pub const LH_PARAM_SCORER: lh_param = 14;
pub const LH_PARAM_DILATION: lh_param = 15;

pub type lh_stage = c_int;
pub const LH_STAGE_SCORES: lh_stage = 0;
pub const LH_STAGE_SELECT: lh_stage = 1;
pub const LH_STAGE_GATHER: lh_stage = 2;
pub const LH_STAGE_ATTENTION_FORWARD: lh_stage = 3;
pub const LH_STAGE_SCATTER: lh_stage = 4;
pub const LH_STAGE_REGATHER: lh_stage = 5;
pub const LH_STAGE_GATHER_DOUT: lh_stage = 6;
pub const LH_STAGE_ATTENTION_BACKWARD: lh_stage = 7;
pub const LH_STAGE_POOL_GRAD: lh_stage = 8;
pub const LH_STAGE_COUNT: lh_stage = 9;

pub type lh_query = c_int;
pub const LH_QUERY_SUBSEQ_LEN: lh_query = 0;
pub const LH_QUERY_PYRAMID_LEN: lh_query = 1;
pub const LH_QUERY_SAVED_BYTES: lh_query = 2;
pub const LH_QUERY_FWD_WORKSPACE_BYTES: lh_query = 3;
pub const LH_QUERY_BWD_WORKSPACE_BYTES: lh_query = 4;
pub const LH_QUERY_STAGE_WORKSPACE_BYTES: lh_query = 5;
pub const LH_QUERY_BACKEND: lh_query = 6;
pub const LH_QUERY_LOCAL_SEQ_LEN: lh_query = 7;
pub const LH_QUERY_CHUNKS: lh_query = 8;
pub const LH_QUERY_ATTENTION_WORKSPACE_BYTES: lh_query = 9;
pub const LH_QUERY_WORLD: lh_query = 10;
pub const LH_QUERY_RANK: lh_query = 11;
pub const LH_QUERY_SETUP_KERNELS_US: lh_query = 12;
pub const LH_QUERY_SETUP_CUDNN_HANDLE_US: lh_query = 13;
pub const LH_QUERY_SETUP_CUDNN_GRAPH_US: lh_query = 14;
pub const LH_QUERY_SETUP_CUDNN_HEURISTICS_US: lh_query = 15;
pub const LH_QUERY_SETUP_CUDNN_PLAN_US: lh_query = 16;
pub const LH_QUERY_SETUP_CUDNN_REUSED: lh_query = 17;

pub type lh_context_option = c_int;
pub const LH_CONTEXT_NUM_THREADS: lh_context_option = 0;
pub const LH_CONTEXT_CACHE_ENABLED: lh_context_option = 1;
pub const LH_CONTEXT_CACHE_DIR: lh_context_option = 2;

// ---- opaque handles ---------------------------------------------------------------------------

/// Opaque context (`struct lh_context`). Only ever used behind a pointer.
#[repr(C)]
pub struct lh_context {
    _private: [u8; 0],
    // Neither Send, Sync nor Unpin: the safe crate decides what it may promise.
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// Opaque plan (`struct lh_plan`). Only ever used behind a pointer.
#[repr(C)]
pub struct lh_plan {
    _private: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// Opaque ring of context-parallel ranks (`struct lh_ring`). Only ever used behind a pointer.
#[repr(C)]
pub struct lh_ring {
    _private: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

// ---- callbacks --------------------------------------------------------------------------------

/// `lh_attention_forward_hook`: a framework's own attention step, called by `lh_forward` with the
/// gathered chunk-major sub-sequence. `None` is the C NULL. It must not unwind into C.
pub type lh_attention_forward_hook = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        plan: *mut lh_plan,
        q_sel: *const c_void,
        k_sel: *const c_void,
        v_sel: *const c_void,
        o_sel: *mut c_void,
        lse: *mut f32,
        stream: *mut c_void,
    ) -> lh_status,
>;

/// `lh_attention_backward_hook`: the gradients of the attention step, called by `lh_backward`.
pub type lh_attention_backward_hook = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        plan: *mut lh_plan,
        q_sel: *const c_void,
        k_sel: *const c_void,
        v_sel: *const c_void,
        o_sel: *const c_void,
        lse: *const f32,
        do_sel: *const c_void,
        dq_sel: *mut c_void,
        dk_sel: *mut c_void,
        dv_sel: *mut c_void,
        stream: *mut c_void,
    ) -> lh_status,
>;

// ---- functions --------------------------------------------------------------------------------

extern "C" {
    pub fn lh_version_number() -> c_int;
    pub fn lh_version_string() -> *const c_char;

    pub fn lh_status_string(status: lh_status) -> *const c_char;
    pub fn lh_last_error() -> *const c_char;

    pub fn lh_context_create(
        backend: lh_backend,
        device: c_int,
        out_context: *mut *mut lh_context,
    ) -> lh_status;
    pub fn lh_context_destroy(context: *mut lh_context) -> lh_status;
    pub fn lh_context_get_backend(
        context: *const lh_context,
        out_backend: *mut lh_backend,
    ) -> lh_status;
    pub fn lh_context_set_i64(
        context: *mut lh_context,
        option: lh_context_option,
        value: i64,
    ) -> lh_status;
    pub fn lh_context_set_str(
        context: *mut lh_context,
        option: lh_context_option,
        value: *const c_char,
    ) -> lh_status;
    pub fn lh_context_save_device(context: *const lh_context, path: *const c_char) -> lh_status;

    pub fn lh_plan_create(context: *mut lh_context, out_plan: *mut *mut lh_plan) -> lh_status;
    pub fn lh_plan_destroy(plan: *mut lh_plan) -> lh_status;
    pub fn lh_plan_set_i64(plan: *mut lh_plan, param: lh_param, value: i64) -> lh_status;
    pub fn lh_plan_set_f64(plan: *mut lh_plan, param: lh_param, value: f64) -> lh_status;
    pub fn lh_plan_get_param_i64(
        plan: *const lh_plan,
        param: lh_param,
        out_value: *mut i64,
    ) -> lh_status;
    pub fn lh_plan_get_param_f64(
        plan: *const lh_plan,
        param: lh_param,
        out_value: *mut f64,
    ) -> lh_status;
    pub fn lh_plan_finalize(plan: *mut lh_plan) -> lh_status;
    pub fn lh_plan_get_i64(plan: *const lh_plan, query: lh_query, out_value: *mut i64)
        -> lh_status;
    pub fn lh_plan_get_stage_ms(
        plan: *const lh_plan,
        stage: lh_stage,
        out_ms: *mut f64,
    ) -> lh_status;
    pub fn lh_plan_precompile(
        plan: *const lh_plan,
        chip: *const c_char,
        out_compiled: *mut i64,
    ) -> lh_status;
    pub fn lh_plan_precompile_device(
        plan: *const lh_plan,
        device_path: *const c_char,
        out_kernels: *mut i64,
        out_cudnn_plans: *mut i64,
    ) -> lh_status;

    pub fn lh_forward(
        plan: *mut lh_plan,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        out: *mut c_void,
        saved: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> lh_status;
    pub fn lh_forward_with_scores(
        plan: *mut lh_plan,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        scores_q: *const f32,
        scores_k: *const f32,
        out: *mut c_void,
        saved: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> lh_status;
    pub fn lh_backward(
        plan: *mut lh_plan,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        out: *const c_void,
        dout: *const c_void,
        saved: *const c_void,
        dq: *mut c_void,
        dk: *mut c_void,
        dv: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> lh_status;

    pub fn lh_scores(
        plan: *mut lh_plan,
        q: *const c_void,
        k: *const c_void,
        scores_q: *mut f32,
        scores_k: *mut f32,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> lh_status;
    pub fn lh_scores_qkv(
        plan: *mut lh_plan,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        scores_q: *mut f32,
        scores_k: *mut f32,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> lh_status;
    pub fn lh_select(
        plan: *mut lh_plan,
        scores_q: *const f32,
        scores_k: *const f32,
        indices: *mut i32,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> lh_status;
    pub fn lh_gather(
        plan: *mut lh_plan,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        indices: *const i32,
        q_sel: *mut c_void,
        k_sel: *mut c_void,
        v_sel: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> lh_status;
    pub fn lh_scatter(
        plan: *mut lh_plan,
        indices: *const i32,
        o_sel: *const c_void,
        out: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> lh_status;

    pub fn lh_attention_forward(
        plan: *mut lh_plan,
        q_sel: *const c_void,
        k_sel: *const c_void,
        v_sel: *const c_void,
        o_sel: *mut c_void,
        lse: *mut f32,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> lh_status;
    pub fn lh_attention_backward(
        plan: *mut lh_plan,
        q_sel: *const c_void,
        k_sel: *const c_void,
        v_sel: *const c_void,
        o_sel: *const c_void,
        lse: *const f32,
        do_sel: *const c_void,
        dq_sel: *mut c_void,
        dk_sel: *mut c_void,
        dv_sel: *mut c_void,
        workspace: *mut c_void,
        stream: *mut c_void,
    ) -> lh_status;

    pub fn lh_ring_create_local(world: c_int, out_ring: *mut *mut lh_ring) -> lh_status;
    pub fn lh_ring_create_nccl(
        context: *mut lh_context,
        nccl_comm: *mut c_void,
        out_ring: *mut *mut lh_ring,
    ) -> lh_status;
    pub fn lh_nccl_get_unique_id(context: *mut lh_context, unique_id: *mut c_void) -> lh_status;
    pub fn lh_ring_create_nccl_from_id(
        context: *mut lh_context,
        unique_id: *const c_void,
        rank: c_int,
        world: c_int,
        out_ring: *mut *mut lh_ring,
    ) -> lh_status;
    pub fn lh_ring_destroy(ring: *mut lh_ring) -> lh_status;
    pub fn lh_plan_set_ring(plan: *mut lh_plan, ring: *mut lh_ring, rank: c_int) -> lh_status;
    pub fn lh_plan_set_attention_hooks(
        plan: *mut lh_plan,
        forward: lh_attention_forward_hook,
        backward: lh_attention_backward_hook,
        user_data: *mut c_void,
    ) -> lh_status;
}

/// Bytes of an NCCL unique id (`lh_nccl_get_unique_id`).
pub const NCCL_UNIQUE_ID_BYTES: usize = 128;
