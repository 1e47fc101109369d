//! The C enumerations as Rust enums, with checked conversions from the raw values the library
//! reports (an unknown value is an error, never undefined behaviour).

use lighthouse_sys as sys;

use crate::error::{Error, Result, Status};

macro_rules! c_enum {
    ($(#[$doc:meta])* $name:ident : $cty:ty { $($variant:ident = $value:path),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The C value.
            pub fn to_raw(self) -> $cty {
                match self { $($name::$variant => $value),+ }
            }

            /// The enum of a C value the library reported.
            pub fn from_raw(raw: $cty) -> Result<$name> {
                $(if raw == $value { return Ok($name::$variant); })+
                Err(Error::new(Status::Internal,
                    format!("the library reported {} value {} which this crate does not know",
                            stringify!($name), raw)))
            }
        }
    };
}

c_enum! {
    /// Where a context runs (`lh_backend`).
    Backend: sys::lh_backend {
        Auto = sys::LH_BACKEND_AUTO,
        Cpu = sys::LH_BACKEND_CPU,
        Cuda = sys::LH_BACKEND_CUDA,
    }
}

c_enum! {
    /// Element type of q, k, v, out and their gradients (`lh_dtype`).
    Dtype: sys::lh_dtype {
        Float32 = sys::LH_DTYPE_FLOAT32,
        Float16 = sys::LH_DTYPE_FLOAT16,
        BFloat16 = sys::LH_DTYPE_BFLOAT16,
    }
}

c_enum! {
    /// Memory layout of the tensors (`lh_layout`): `Bnhd` is [batch, seq, heads, head_dim].
    Layout: sys::lh_layout {
        Bnhd = sys::LH_LAYOUT_BNHD,
        Bhnd = sys::LH_LAYOUT_BHND,
    }
}

c_enum! {
    /// Lighthouse attention or plain dense causal attention (`lh_mode`).
    Mode: sys::lh_mode {
        Lighthouse = sys::LH_MODE_LIGHTHOUSE,
        Dense = sys::LH_MODE_DENSE,
    }
}

impl Dtype {
    /// Bytes of one element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Float32 => 4,
            Dtype::Float16 | Dtype::BFloat16 => 2,
        }
    }
}

/// Where the scores that rank the pyramid come from (`lh_scorer`, docs/spec.md section 10).
/// They decide only the selection and carry no gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scorer {
    /// ||q[t]||, ||k[t]||: the default.
    Norm,
    /// The norms of causal attention outputs on the `dilation` strided sequences of each head
    /// (queries q and keys k, then queries k and keys q). Needs heads == kv_heads and seq_len
    /// (on a ring: each chunk's length) a multiple of `dilation`.
    Dilated {
        /// d, >= 1 ([`Scorer::DEFAULT_DILATION`] is the library's default).
        dilation: usize,
    },
    /// The caller's own scores, given to every forward (`Plan::forward_with_scores`).
    External,
}

impl Scorer {
    /// The dilation the library uses where none is given.
    pub const DEFAULT_DILATION: usize = 4;

    /// The `lh_scorer` value.
    pub fn to_raw(self) -> sys::lh_scorer {
        match self {
            Scorer::Norm => sys::LH_SCORER_NORM,
            Scorer::Dilated { .. } => sys::LH_SCORER_DILATED,
            Scorer::External => sys::LH_SCORER_EXTERNAL,
        }
    }
}

c_enum! {
    /// A stage of one forward or backward (`lh_stage`), for `Plan::stage_ms`.
    Stage: sys::lh_stage {
        Scores = sys::LH_STAGE_SCORES,
        Select = sys::LH_STAGE_SELECT,
        Gather = sys::LH_STAGE_GATHER,
        AttentionForward = sys::LH_STAGE_ATTENTION_FORWARD,
        Scatter = sys::LH_STAGE_SCATTER,
        Regather = sys::LH_STAGE_REGATHER,
        GatherDout = sys::LH_STAGE_GATHER_DOUT,
        AttentionBackward = sys::LH_STAGE_ATTENTION_BACKWARD,
        PoolGrad = sys::LH_STAGE_POOL_GRAD,
    }
}
