//! How messages travel on a byte stream: `len u32 BE | bytes`, at most
//! [`MAX_FRAME`] (plus a sealing's overhead). The control socket carries
//! plain postcard bodies this way; the agents' exec streams carry sealed
//! ones, the same framing around a different body.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame body accepted on a stream.
pub const MAX_FRAME: usize = 1 << 20;

/// What a sealing may add to a body (nonce, tag, counters).
const SEALING_ROOM: usize = 64;

/// Errors moving frames.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// A frame announced a length over [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The stream failed.
    #[error("stream i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one length-prefixed chunk; `Ok(None)` on a clean end of stream.
pub async fn read_chunk<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FramingError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME + SEALING_ROOM {
        return Err(FramingError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Writes one length-prefixed chunk.
pub async fn write_chunk<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> Result<(), FramingError> {
    let mut buf = Vec::with_capacity(4 + bytes.len());
    buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    buf.extend_from_slice(bytes);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_round_trip_and_a_huge_length_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        write_chunk(&mut a, b"hello").await.unwrap();
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        drop(a);
        assert_eq!(read_chunk(&mut b).await.unwrap().unwrap(), b"hello");
        assert!(matches!(
            read_chunk(&mut b).await,
            Err(FramingError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn a_clean_end_is_none() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(read_chunk(&mut b).await.unwrap().is_none());
    }
}
