//! gRPC status codes as the `grpc_code` label spells them.

use http::StatusCode;

/// A gRPC status code, spelled in labels the way Go's `codes.Code.String()` spells it
/// (note the single-l `Canceled`), so dashboards built for go-grpc-prometheus match.
///
/// Every way a status can reach the layer maps onto one of these 17 values, so the
/// `grpc_code` label is bounded whatever a peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum GrpcCode {
    /// `0`: not an error.
    Ok = 0,
    /// `1`: the operation was cancelled, typically by the caller.
    Canceled = 1,
    /// `2`: unknown error; also used here for unparsable or missing statuses.
    Unknown = 2,
    /// `3`: the client specified an invalid argument.
    InvalidArgument = 3,
    /// `4`: the deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// `5`: some requested entity was not found.
    NotFound = 5,
    /// `6`: the entity a client attempted to create already exists.
    AlreadyExists = 6,
    /// `7`: the caller does not have permission.
    PermissionDenied = 7,
    /// `8`: some resource has been exhausted.
    ResourceExhausted = 8,
    /// `9`: the system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// `10`: the operation was aborted.
    Aborted = 10,
    /// `11`: the operation was attempted past the valid range.
    OutOfRange = 11,
    /// `12`: the operation is not implemented or not supported.
    Unimplemented = 12,
    /// `13`: internal error.
    Internal = 13,
    /// `14`: the service is currently unavailable.
    Unavailable = 14,
    /// `15`: unrecoverable data loss or corruption.
    DataLoss = 15,
    /// `16`: the request does not have valid authentication credentials.
    Unauthenticated = 16,
}

impl GrpcCode {
    /// How many codes there are (17): the size of per-code tables.
    pub const COUNT: usize = 17;

    /// All [`COUNT`](Self::COUNT) codes, in numeric order.
    pub const ALL: [GrpcCode; Self::COUNT] = [
        Self::Ok,
        Self::Canceled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The code for a numeric value, or `None` outside `0..=16`.
    pub const fn from_i32(value: i32) -> Option<Self> {
        if value >= 0 && value <= 16 { Some(Self::ALL[value as usize]) } else { None }
    }

    /// The numeric value of the code.
    pub const fn as_i32(self) -> i32 {
        self as i32
    }

    /// Index into per-code tables (`0..COUNT`).
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// Parses a `grpc-status` header or trailer value.
    ///
    /// Anything that is not a plain decimal number in `0..=16` (empty, signed, padded,
    /// non-ASCII, out of range) is `Unknown`, as the gRPC spec asks of clients.
    pub fn from_header_value(value: &[u8]) -> Self {
        // Longest valid value is two digits; refusing longer input also rules out overflow.
        match value {
            [d @ b'0'..=b'9'] => Self::ALL[usize::from(d - b'0')],
            [b'1', d @ b'0'..=b'6'] => Self::ALL[10 + usize::from(d - b'0')],
            _ => Self::Unknown,
        }
    }

    /// The code a client infers from an HTTP status when the response carries no
    /// `grpc-status` ("HTTP to gRPC Status Code Mapping" in the gRPC docs).
    ///
    /// `200` maps to `Unknown` because a 200 response without any status is itself broken.
    pub fn from_http_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    /// The label value: Go's `codes.Code.String()` spelling (`OK`, `Canceled`, `DeadlineExceeded`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Canceled => "Canceled",
            Self::Unknown => "Unknown",
            Self::InvalidArgument => "InvalidArgument",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::PermissionDenied => "PermissionDenied",
            Self::ResourceExhausted => "ResourceExhausted",
            Self::FailedPrecondition => "FailedPrecondition",
            Self::Aborted => "Aborted",
            Self::OutOfRange => "OutOfRange",
            Self::Unimplemented => "Unimplemented",
            Self::Internal => "Internal",
            Self::Unavailable => "Unavailable",
            Self::DataLoss => "DataLoss",
            Self::Unauthenticated => "Unauthenticated",
        }
    }

    /// The canonical upper-snake-case name (`OK`, `CANCELLED`, `DEADLINE_EXCEEDED`, ...), as
    /// OpenTelemetry's `rpc.response.status_code` and the gRPC docs spell it.
    pub const fn as_canonical_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Canceled => "CANCELLED",
            Self::Unknown => "UNKNOWN",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::DataLoss => "DATA_LOSS",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Parses Go's spelling (as [`as_str`](Self::as_str) writes it) or a decimal number.
    pub fn from_name(name: &str) -> Option<Self> {
        if let Ok(value) = name.parse::<i32>() {
            return Self::from_i32(value);
        }
        Self::ALL.into_iter().find(|code| code.as_str() == name)
    }
}

impl std::fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<tonic::Code> for GrpcCode {
    fn from(code: tonic::Code) -> Self {
        Self::from_i32(code as i32).unwrap_or(Self::Unknown)
    }
}

impl From<GrpcCode> for tonic::Code {
    fn from(code: GrpcCode) -> Self {
        tonic::Code::from_i32(code.as_i32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_parse_strictly() {
        for code in GrpcCode::ALL {
            assert_eq!(GrpcCode::from_header_value(code.as_i32().to_string().as_bytes()), code);
        }
        for bad in [&b""[..], b"abc", b"-1", b"17", b"99", b"00", b"01", b" 0", b"+1", b"\xff", b"2147483648"] {
            assert_eq!(GrpcCode::from_header_value(bad), GrpcCode::Unknown, "{bad:?}");
        }
    }

    #[test]
    fn http_statuses_map_as_the_spec_says() {
        let cases = [
            (400, GrpcCode::Internal),
            (401, GrpcCode::Unauthenticated),
            (403, GrpcCode::PermissionDenied),
            (404, GrpcCode::Unimplemented),
            (429, GrpcCode::Unavailable),
            (502, GrpcCode::Unavailable),
            (503, GrpcCode::Unavailable),
            (504, GrpcCode::Unavailable),
            (500, GrpcCode::Unknown),
            (418, GrpcCode::Unknown),
        ];
        for (status, code) in cases {
            assert_eq!(GrpcCode::from_http_status(StatusCode::from_u16(status).unwrap()), code);
        }
    }

    #[test]
    fn names_round_trip_and_match_tonic() {
        for code in GrpcCode::ALL {
            assert_eq!(GrpcCode::from_name(code.as_str()), Some(code));
            assert_eq!(GrpcCode::from(tonic::Code::from(code)), code);
        }
        assert_eq!(GrpcCode::Canceled.as_str(), "Canceled");
        assert_eq!(GrpcCode::from_name("Cancelled"), None);
        assert_eq!(GrpcCode::from_name("16"), Some(GrpcCode::Unauthenticated));
    }

    #[test]
    fn canonical_names_are_upper_snake_case_with_the_double_l() {
        for code in GrpcCode::ALL {
            let mut snake = String::new();
            for (i, c) in code.as_str().chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 && code != GrpcCode::Ok {
                    snake.push('_');
                }
                snake.push(c.to_ascii_uppercase());
            }
            let expected = if code == GrpcCode::Canceled { "CANCELLED".to_owned() } else { snake };
            assert_eq!(code.as_canonical_str(), expected);
        }
    }
}
