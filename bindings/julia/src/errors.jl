# Errors: a failing call throws a LighthouseError with the status and lh_last_error()'s sentence.

"""
    LighthouseError(status, name, message)

A call of liblighthouse failed. `status` is the `lh_status` code (e.g. `LH_ERROR_TOPK == 5`),
`name` its C name and `message` says what was wrong, the rule it broke and the values.
Errors found by this package before calling the library (an array of the wrong length) use the
status the library would use.
"""
struct LighthouseError <: Exception
    status::Cint
    name::String
    message::String
end

Base.showerror(io::IO, e::LighthouseError) = print(io, "LighthouseError(", e.name, "): ", e.message)

"The C name of a status code (lh_status_string)."
status_name(status::Integer) = unsafe_string(lh_status_string(Cint(status)))

LighthouseError(status::Integer, message::AbstractString) =
    LighthouseError(Cint(status), status_name(status), String(message))

# Throws for anything but LH_OK. The message is read first and before anything allocates: every
# library call (a finalizer's destroy included) clears this thread's message, and finalizers run
# only where Julia allocates.
@inline function check(status::Cint)
    status == LH_OK && return nothing
    throw_last_error(status)
end

@noinline function throw_last_error(status::Cint)
    ptr = convert(Ptr{UInt8}, lh_last_error())
    message = ptr == C_NULL ? "" : unsafe_string(ptr)
    throw(LighthouseError(status, status_name(status), message))
end
