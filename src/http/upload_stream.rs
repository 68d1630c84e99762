//! An uploaded file handed to a blocking reader a few frames at a time, so a large file never
//! sits in memory: the batch upload's reading thread takes it this way from a REST body and
//! from a console form's file field alike.

use std::io::{self, Read};

use axum::body::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::sync::mpsc;

/// Frames of an upload in flight between the connection and the thread reading it.
pub const FRAMES_IN_FLIGHT: usize = 16;

/// The file as a blocking reader. A frame that could not be read (the connection broke, the
/// file is too large) is a read error, which refuses the file.
pub struct FrameReader {
    frames: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

/// Where [`pump`] puts the frames a [`FrameReader`] reads.
pub type FrameSender = mpsc::Sender<io::Result<Bytes>>;

impl FrameReader {
    pub fn new() -> (FrameSender, FrameReader) {
        let (sender, frames) = mpsc::channel(FRAMES_IN_FLIGHT);
        (sender, FrameReader { frames, current: Bytes::new() })
    }
}

impl Read for FrameReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.frames.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(error)) => return Err(error),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Feeds `file` to the reader until it ends, the reader stops (it has refused the file or
/// read enough), or more than `limit_bytes` came; `true` in the last case.
pub async fn pump<S, E>(mut file: S, frames: FrameSender, limit_bytes: usize) -> bool
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut seen = 0usize;
    while let Some(frame) = file.next().await {
        let data = match frame {
            Ok(data) => data,
            Err(error) => {
                let _ = frames.send(Err(io::Error::other(error))).await;
                return false;
            }
        };
        seen = seen.saturating_add(data.len());
        if seen > limit_bytes {
            let _ = frames.send(Err(io::Error::other("the file is larger than the upload limit"))).await;
            return true;
        }
        if frames.send(Ok(data)).await.is_err() {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use axum::body::Body;

    use super::{FrameReader, pump};

    /// Reads the reader to its end on a blocking thread, as the upload's reading thread does.
    async fn read_through(body: Body, limit: usize) -> (std::io::Result<Vec<u8>>, bool) {
        let (frames, mut reader) = FrameReader::new();
        let reading = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        });
        let too_large = pump(body.into_data_stream(), frames, limit).await;
        (reading.await.unwrap(), too_large)
    }

    #[tokio::test]
    async fn an_upload_streams_to_the_reader_and_one_over_the_limit_is_cut_off() {
        let file = "name,citizen_id\n".repeat(1_000).into_bytes();
        let (read, too_large) = read_through(Body::from(file.clone()), file.len()).await;
        assert_eq!(read.unwrap(), file);
        assert!(!too_large);
        let (read, too_large) = read_through(Body::from(file.clone()), file.len() - 1).await;
        assert!(read.is_err());
        assert!(too_large);
    }
}
