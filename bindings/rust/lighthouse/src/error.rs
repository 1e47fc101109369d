//! Errors: every failing call of the library becomes an [`Error`] that carries the status and
//! the sentence `lh_last_error()` returned on the failing thread.

use std::ffi::CStr;
use std::fmt;

use lighthouse_sys as sys;

/// The non-OK values of `lh_status`. `Unknown` keeps a code this crate does not know yet (a
/// newer library), so no value the library returns is ever lost or misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    NullPointer,
    InvalidValue,
    HeadsMismatch,
    Pooling,
    Topk,
    SeqDivisibility,
    TileTooSmall,
    Levels,
    UnsupportedDtype,
    Unsupported,
    BadState,
    OutOfHostMemory,
    OutOfDeviceMemory,
    BackendUnavailable,
    BadPointer,
    Compile,
    Device,
    Cudnn,
    Communication,
    Io,
    Internal,
    Unknown(i32),
}

/// Every known status with its C code and C name, in code order (the single source of truth for
/// the conversions below).
const KNOWN: [(Status, sys::lh_status, &str); 21] = [
    (
        Status::NullPointer,
        sys::LH_ERROR_NULL_POINTER,
        "LH_ERROR_NULL_POINTER",
    ),
    (
        Status::InvalidValue,
        sys::LH_ERROR_INVALID_VALUE,
        "LH_ERROR_INVALID_VALUE",
    ),
    (
        Status::HeadsMismatch,
        sys::LH_ERROR_HEADS_MISMATCH,
        "LH_ERROR_HEADS_MISMATCH",
    ),
    (Status::Pooling, sys::LH_ERROR_POOLING, "LH_ERROR_POOLING"),
    (Status::Topk, sys::LH_ERROR_TOPK, "LH_ERROR_TOPK"),
    (
        Status::SeqDivisibility,
        sys::LH_ERROR_SEQ_DIVISIBILITY,
        "LH_ERROR_SEQ_DIVISIBILITY",
    ),
    (
        Status::TileTooSmall,
        sys::LH_ERROR_TILE_TOO_SMALL,
        "LH_ERROR_TILE_TOO_SMALL",
    ),
    (Status::Levels, sys::LH_ERROR_LEVELS, "LH_ERROR_LEVELS"),
    (
        Status::UnsupportedDtype,
        sys::LH_ERROR_UNSUPPORTED_DTYPE,
        "LH_ERROR_UNSUPPORTED_DTYPE",
    ),
    (
        Status::Unsupported,
        sys::LH_ERROR_UNSUPPORTED,
        "LH_ERROR_UNSUPPORTED",
    ),
    (
        Status::BadState,
        sys::LH_ERROR_BAD_STATE,
        "LH_ERROR_BAD_STATE",
    ),
    (
        Status::OutOfHostMemory,
        sys::LH_ERROR_OUT_OF_HOST_MEMORY,
        "LH_ERROR_OUT_OF_HOST_MEMORY",
    ),
    (
        Status::OutOfDeviceMemory,
        sys::LH_ERROR_OUT_OF_DEVICE_MEMORY,
        "LH_ERROR_OUT_OF_DEVICE_MEMORY",
    ),
    (
        Status::BackendUnavailable,
        sys::LH_ERROR_BACKEND_UNAVAILABLE,
        "LH_ERROR_BACKEND_UNAVAILABLE",
    ),
    (
        Status::BadPointer,
        sys::LH_ERROR_BAD_POINTER,
        "LH_ERROR_BAD_POINTER",
    ),
    (Status::Compile, sys::LH_ERROR_COMPILE, "LH_ERROR_COMPILE"),
    (Status::Device, sys::LH_ERROR_DEVICE, "LH_ERROR_DEVICE"),
    (Status::Cudnn, sys::LH_ERROR_CUDNN, "LH_ERROR_CUDNN"),
    (
        Status::Communication,
        sys::LH_ERROR_COMMUNICATION,
        "LH_ERROR_COMMUNICATION",
    ),
    (Status::Io, sys::LH_ERROR_IO, "LH_ERROR_IO"),
    (
        Status::Internal,
        sys::LH_ERROR_INTERNAL,
        "LH_ERROR_INTERNAL",
    ),
];

impl Status {
    /// Every status the crate knows, in code order.
    pub fn all() -> impl Iterator<Item = Status> {
        KNOWN.iter().map(|&(status, _, _)| status)
    }

    /// The status of a C code; `None` for `LH_OK`, `Unknown(code)` for a code not listed here.
    pub fn from_code(code: sys::lh_status) -> Option<Status> {
        if code == sys::LH_OK {
            return None;
        }
        Some(
            KNOWN
                .iter()
                .find(|k| k.1 == code)
                .map_or(Status::Unknown(code), |k| k.0),
        )
    }

    /// The C code (`lh_status`) of this status.
    pub fn code(self) -> sys::lh_status {
        match self {
            Status::Unknown(code) => code,
            known => KNOWN
                .iter()
                .find(|k| k.0 == known)
                .map(|k| k.1)
                .expect("KNOWN lists every variant"),
        }
    }

    /// The C name ("LH_ERROR_TOPK"), as `lh_status_string` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Unknown(_) => "LH_ERROR_UNKNOWN",
            known => KNOWN
                .iter()
                .find(|k| k.0 == known)
                .map(|k| k.2)
                .expect("KNOWN lists every variant"),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Unknown(code) => write!(f, "LH_ERROR_UNKNOWN({code})"),
            known => f.write_str(known.name()),
        }
    }
}

/// A failed call: the status and the library's sentence saying what was wrong and with which
/// values. Errors detected by this crate before calling the library (a slice of the wrong length,
/// a CUDA plan given host slices) use the same statuses the library would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    /// An error with a status and a message: raised by this crate itself, or by an attention
    /// hook closure, whose status and message the forward/backward that ran it then returns.
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    /// The status and `lh_last_error()` of a call that returned `code` (not `LH_OK`) on this
    /// thread. Must be called before any other library call on this thread, which would clear it.
    pub(crate) fn from_last_call(code: sys::lh_status) -> Error {
        let status = Status::from_code(code).unwrap_or(Status::Internal);
        // SAFETY: lh_last_error never returns NULL and the text is valid until the next library
        // call on this thread; it is copied before returning.
        let message = unsafe { cstr_to_string(sys::lh_last_error()) };
        Error { status, message }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// The C status code (`lh_status`).
    pub fn code(&self) -> i32 {
        self.status.code()
    }

    /// What was wrong, the rule it broke and the offending values.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// `Ok(())` for `LH_OK`, otherwise the error with this thread's `lh_last_error()`.
pub(crate) fn check(code: sys::lh_status) -> Result<()> {
    if code == sys::LH_OK {
        Ok(())
    } else {
        Err(Error::from_last_call(code))
    }
}

/// The library's own name for a status code (`lh_status_string`), for any code.
pub fn status_string(code: i32) -> String {
    // SAFETY: lh_status_string accepts any value and returns static storage, never NULL.
    unsafe { cstr_to_string(sys::lh_status_string(code)) }
}

/// Copies a C string the library owns; a NULL pointer (which the ABI rules out) becomes "".
pub(crate) unsafe fn cstr_to_string(ptr: *const std::ffi::c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    CStr::from_ptr(ptr).to_string_lossy().into_owned()
}
