//! TFTP wire format: parsing and encoding of the five RFC 1350 packets plus the
//! RFC 2347 option acknowledgement. Pure: bytes in, values out.

use std::fmt;

/// Smallest block size RFC 2348 allows.
pub const MIN_BLKSIZE: u16 = 8;
/// Largest block size RFC 2348 allows.
pub const MAX_BLKSIZE: u16 = 65464;
/// Block size without negotiation (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;

/// TFTP error codes (RFC 1350, RFC 2347).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not defined, see the message.
    NotDefined = 0,
    /// File not found.
    FileNotFound = 1,
    /// Access violation.
    AccessViolation = 2,
    /// Disk full or allocation exceeded.
    DiskFull = 3,
    /// Illegal TFTP operation.
    IllegalOperation = 4,
    /// Unknown transfer ID.
    UnknownTid = 5,
    /// File already exists.
    FileExists = 6,
    /// No such user.
    NoSuchUser = 7,
    /// Option negotiation refused (RFC 2347).
    OptionRefused = 8,
}

/// Transfer mode of a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// `octet`: bytes as they are.
    Octet,
    /// `netascii`: line-ending conversion (refused by this server).
    Netascii,
    /// `mail`: obsolete (refused).
    Mail,
}

/// A read or write request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Request {
    /// The file name exactly as sent (not yet checked).
    pub filename: Vec<u8>,
    /// Transfer mode.
    pub mode: Mode,
    /// RFC 2347 options in the order sent; names lowercased.
    pub options: Vec<(String, String)>,
}

/// A decoded TFTP packet.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Packet {
    /// Read request.
    Rrq(Request),
    /// Write request.
    Wrq(Request),
    /// Data block (payload length only: the server never receives data it uses).
    Data {
        /// Block number on the wire.
        block: u16,
        /// Payload length.
        len: usize,
    },
    /// Acknowledgement.
    Ack(u16),
    /// Error.
    Error {
        /// Error code (not necessarily one of [`ErrorCode`]).
        code: u16,
        /// Message, lossily decoded.
        message: String,
    },
    /// Option acknowledgement.
    Oack(Vec<(String, String)>),
}

/// Why a datagram is not a valid TFTP packet.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than the packet type needs.
    #[error("packet too short ({0} bytes)")]
    TooShort(usize),
    /// Opcode outside 1..=6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A string field without its terminating NUL.
    #[error("{0} is not NUL-terminated")]
    Unterminated(&'static str),
    /// The file name is empty.
    #[error("empty file name")]
    EmptyFilename,
    /// The mode is none of octet, netascii, mail.
    #[error("unknown transfer mode {0:?}")]
    BadMode(String),
    /// An option name without a value.
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
            Mode::Mail => "mail",
        })
    }
}

/// Splits off one NUL-terminated field.
fn field<'a>(buf: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), ParseError> {
    let nul = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::Unterminated(what))?;
    Ok((&buf[..nul], &buf[nul + 1..]))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse_options(mut rest: &[u8]) -> Result<Vec<(String, String)>, ParseError> {
    let mut options = Vec::new();
    while !rest.is_empty() {
        let (name, r) = field(rest, "option name")?;
        if r.is_empty() {
            return Err(ParseError::OptionWithoutValue(lossy(name)));
        }
        let (value, r) = field(r, "option value")?;
        options.push((lossy(name).to_ascii_lowercase(), lossy(value)));
        rest = r;
    }
    Ok(options)
}

fn parse_request(body: &[u8]) -> Result<Request, ParseError> {
    let (filename, rest) = field(body, "file name")?;
    if filename.is_empty() {
        return Err(ParseError::EmptyFilename);
    }
    let (mode, rest) = field(rest, "mode")?;
    let mode = match lossy(mode).to_ascii_lowercase().as_str() {
        "octet" => Mode::Octet,
        "netascii" => Mode::Netascii,
        "mail" => Mode::Mail,
        _ => return Err(ParseError::BadMode(lossy(mode).chars().take(32).collect())),
    };
    Ok(Request {
        filename: filename.to_vec(),
        mode,
        options: parse_options(rest)?,
    })
}

/// Decodes one datagram.
pub fn parse(buf: &[u8]) -> Result<Packet, ParseError> {
    if buf.len() < 2 {
        return Err(ParseError::TooShort(buf.len()));
    }
    let opcode = u16::from_be_bytes([buf[0], buf[1]]);
    let body = &buf[2..];
    match opcode {
        1 => parse_request(body).map(Packet::Rrq),
        2 => parse_request(body).map(Packet::Wrq),
        3 => {
            if body.len() < 2 {
                return Err(ParseError::TooShort(buf.len()));
            }
            Ok(Packet::Data {
                block: u16::from_be_bytes([body[0], body[1]]),
                len: body.len() - 2,
            })
        }
        // Some clients pad ACKs; RFC 1350 does not forbid it, so extra bytes are ignored.
        4 => {
            if body.len() < 2 {
                return Err(ParseError::TooShort(buf.len()));
            }
            Ok(Packet::Ack(u16::from_be_bytes([body[0], body[1]])))
        }
        5 => {
            if body.len() < 2 {
                return Err(ParseError::TooShort(buf.len()));
            }
            let code = u16::from_be_bytes([body[0], body[1]]);
            // Tolerate a missing terminator: the message is informational only.
            let msg = &body[2..];
            let msg = msg.split(|&b| b == 0).next().unwrap_or_default();
            Ok(Packet::Error {
                code,
                message: lossy(msg),
            })
        }
        6 => parse_options(body).map(Packet::Oack),
        _ => Err(ParseError::UnknownOpcode(opcode)),
    }
}

/// Appends a DATA header (opcode 3, block number) to `out`.
pub fn data_header(out: &mut Vec<u8>, block: u16) {
    out.extend_from_slice(&3u16.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// Encodes an ACK.
pub fn encode_ack(block: u16) -> Vec<u8> {
    let mut v = 4u16.to_be_bytes().to_vec();
    v.extend_from_slice(&block.to_be_bytes());
    v
}

/// Encodes an ERROR packet.
pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut v = 5u16.to_be_bytes().to_vec();
    v.extend_from_slice(&(code as u16).to_be_bytes());
    v.extend(message.bytes().filter(|&b| b != 0));
    v.push(0);
    v
}

/// Encodes an OACK.
pub fn encode_oack(options: &[(String, String)]) -> Vec<u8> {
    let mut v = 6u16.to_be_bytes().to_vec();
    for (k, val) in options {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

/// Encodes a request (used by tests and the fuzz target's round trip).
pub fn encode_request(
    opcode: u16,
    filename: &[u8],
    mode: &str,
    options: &[(&str, &str)],
) -> Vec<u8> {
    let mut v = opcode.to_be_bytes().to_vec();
    v.extend_from_slice(filename);
    v.push(0);
    v.extend_from_slice(mode.as_bytes());
    v.push(0);
    for (k, val) in options {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}
