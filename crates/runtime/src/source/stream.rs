//! A model file decoded while it is read: the protobuf decoder pulls the file through a small
//! window, so the file's bytes and the decoded model are never in memory together (reading the
//! file whole first would hold the weights twice). The SHA-256 that names the file in reports is
//! computed on the same pass.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use prost::bytes::Buf;
use prost::Message;
use sha2::{Digest, Sha256};
use tract_onnx::pb::ModelProto;

use crate::error::RuntimeError;
use crate::MemoryLimit;

/// How much of the file is read at a time.
const WINDOW: usize = 1 << 16;

/// A model file's decoded protobuf, its digest and its size.
pub struct ReadModel {
    pub proto: ModelProto,
    /// SHA-256 of the file's bytes, 64 lowercase hex digits.
    pub sha256: String,
    pub file_bytes: u64,
}

/// Decodes the model file at `path` as it is read. Only a regular file is read, and only when
/// it fits the memory limit (`budget`, or the machine's memory): the decoded model holds about
/// as many bytes as the file.
pub fn read_model_proto(path: &Path, budget: Option<u64>) -> Result<ReadModel, RuntimeError> {
    let file_error = |message: String| RuntimeError::Read(edgediff_io::FileError::new(path, message));
    let (file, meta) = edgediff_io::open_regular(path)?;
    if meta.len() == 0 {
        return Err(RuntimeError::Decode("file is empty".into()));
    }
    MemoryLimit::new(budget).check(meta.len(), "the model file")?;
    let mut buf = FileBuf::new(file, meta.len());
    let decoded = ModelProto::decode(&mut buf);
    if let Some(e) = buf.error.take() {
        return Err(file_error(format!("cannot read: {e}")));
    }
    let proto = decoded.map_err(|e| RuntimeError::Decode(e.to_string()))?;
    if buf.read != meta.len() {
        return Err(file_error(format!("changed size while read ({} of {} bytes)", buf.read, meta.len())));
    }
    let sha256 = buf.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(ReadModel { proto, sha256, file_bytes: meta.len() })
}

/// The file as a [`Buf`]: a window refilled as the decoder advances, each byte hashed once.
/// A read error ends the data early (the decoder then fails) and is kept for the message.
struct FileBuf {
    file: File,
    window: Vec<u8>,
    pos: usize,
    /// Bytes of the file not yet consumed by the decoder (those in the window included).
    left: u64,
    /// Bytes read from the file so far.
    read: u64,
    hasher: Sha256,
    error: Option<std::io::Error>,
}

impl FileBuf {
    fn new(file: File, len: u64) -> FileBuf {
        let mut buf = FileBuf {
            file,
            window: Vec::with_capacity(WINDOW),
            pos: 0,
            left: len,
            read: 0,
            hasher: Sha256::new(),
            error: None,
        };
        buf.refill();
        buf
    }

    /// Replaces the consumed window with the next bytes of the file.
    fn refill(&mut self) {
        self.window.clear();
        self.pos = 0;
        let want = usize::try_from(self.left.min(WINDOW as u64)).unwrap_or(WINDOW);
        self.window.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match self.file.read(&mut self.window[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        self.window.truncate(filled);
        self.hasher.update(&self.window);
        self.read += filled as u64;
        if filled < want {
            // The file ended early or failed: no more data than what was read.
            self.left = filled as u64;
        }
    }
}

impl Buf for FileBuf {
    fn remaining(&self) -> usize {
        usize::try_from(self.left).unwrap_or(usize::MAX)
    }

    fn chunk(&self) -> &[u8] {
        &self.window[self.pos..]
    }

    /// Moves `count` bytes on, through as many windows as that takes (a skipped unknown field
    /// may be longer than one window); never past the end of the data.
    fn advance(&mut self, mut count: usize) {
        while count > 0 && self.left > 0 {
            let step = count.min(self.window.len() - self.pos);
            self.pos += step;
            self.left -= step as u64;
            count -= step;
            if self.pos == self.window.len() && self.left > 0 {
                self.refill();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_decodes_as_its_bytes_do_with_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/sprites-cond-int8.onnx");
        let bytes = std::fs::read(&path).unwrap();
        let read = read_model_proto(&path, None).unwrap();
        assert_eq!(read.proto, ModelProto::decode(&bytes[..]).unwrap());
        assert_eq!(read.sha256, edgediff_io::sha256_hex(&bytes));
        assert_eq!(read.file_bytes, bytes.len() as u64);
        let cut = dir.path().join("cut.onnx");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(read_model_proto(&cut, None), Err(RuntimeError::Decode(_))));
        let e = read_model_proto(dir.path(), None).err().unwrap().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = read_model_proto(&path, Some(1000)).err().unwrap().to_string();
        assert!(e.contains("the model file"), "{e}");
    }
}
