//! Weights stored outside the ONNX file (ONNX `external_data`: a tensor names a `location`
//! relative to the model file, with an `offset` and a `length`), read into the decoded model so
//! everything after loading sees one self-contained graph. Exports above protobuf's 2 GB and
//! optimum's folders store weights this way (`model.onnx_data`).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use tract_onnx::pb::{tensor_proto::DataLocation, GraphProto, TensorProto};

use super::SourceError;

/// Reads every initializer stored outside the file from `dir` (the model file's folder) into its
/// `raw_data`; returns how many bytes were read. A location outside `dir`, a missing file or a
/// length that does not fit the tensor is an error naming the tensor.
pub fn inline_external_data(graph: &mut GraphProto, dir: &Path) -> Result<u64, SourceError> {
    let mut total = 0u64;
    let canonical_dir = canonical(dir)?;
    for tensor in graph.initializer.iter_mut() {
        if tensor.data_location != Some(DataLocation::External as i32) {
            continue;
        }
        let data = read_external(tensor, dir, &canonical_dir)?;
        total += data.len() as u64;
        tensor.raw_data = data;
        tensor.external_data.clear();
        tensor.data_location = None;
    }
    Ok(total)
}

/// `path` with every link resolved.
fn canonical(path: &Path) -> Result<PathBuf, SourceError> {
    path.canonicalize().map_err(|e| SourceError::file(path, format!("cannot read: {e}")))
}

/// One tensor's bytes from its file in `dir` (`canonical_dir`: `dir` with its links resolved).
fn read_external(tensor: &TensorProto, dir: &Path, canonical_dir: &Path) -> Result<Vec<u8>, SourceError> {
    let bad = |message: String| SourceError::file(dir, format!("tensor `{}`: external data {message}", tensor.name));
    let entry = |key: &str| tensor.external_data.iter().find(|e| e.key == key).map(|e| e.value.as_str());
    let location = entry("location").ok_or_else(|| bad("names no `location`".into()))?;
    let number = |key: &str| -> Result<Option<u64>, SourceError> {
        entry(key)
            .map(|v| v.parse::<u64>().map_err(|_| bad(format!("`{key}` = {v:?} is not a byte count"))))
            .transpose()
    };
    let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
    let relative = Path::new(location);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad(format!("location {location:?} is not a plain file name beside the model")));
    }
    let path = dir.join(relative);
    // A link in the model's folder may still lead out of it: the file itself must be inside.
    if !canonical(&path)?.starts_with(canonical_dir) {
        return Err(bad(format!("location {location:?} leads out of the model's folder (a link)")));
    }
    let (mut file, meta) = edgediff_io::open_regular(&path).map_err(|e| SourceError::file(&path, e.message))?;
    let size = meta.len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(bad(format!("{location}: {length} bytes at offset {offset} run past its end ({size} bytes)")));
    }
    if let Some(expected) = crate::memory_plan::tensor_bytes(&tensor.dims, tensor.data_type) {
        if expected != length {
            return Err(bad(format!("{location}: {length} bytes, but dims {:?} need {expected}", tensor.dims)));
        }
    }
    let mut data = vec![0u8; usize::try_from(length).map_err(|_| bad("is too large".into()))?];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut data))
        .map_err(|e| SourceError::file(&path, format!("cannot read: {e}")))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::StringStringEntryProto;

    fn external(name: &str, dims: Vec<i64>, location: &str, offset: Option<u64>, length: Option<u64>) -> TensorProto {
        let mut entries = vec![("location", location.to_string())];
        entries.extend(offset.map(|o| ("offset", o.to_string())));
        entries.extend(length.map(|l| ("length", l.to_string())));
        TensorProto {
            name: name.into(),
            dims,
            data_type: tract_onnx::pb::tensor_proto::DataType::Float as i32,
            data_location: Some(DataLocation::External as i32),
            external_data: entries
                .into_iter()
                .map(|(k, v)| StringStringEntryProto { key: k.into(), value: v })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn reads_each_tensor_at_its_offset_and_refuses_escapes_and_short_files() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0u8..32).collect();
        std::fs::write(dir.path().join("w.bin"), &bytes).unwrap();
        let mut graph = GraphProto {
            initializer: vec![
                external("a", vec![2], "w.bin", Some(8), Some(8)),
                external("b", vec![4], "w.bin", Some(16), None),
            ],
            ..Default::default()
        };
        assert_eq!(inline_external_data(&mut graph, dir.path()).unwrap(), 24);
        assert_eq!(graph.initializer[0].raw_data, bytes[8..16]);
        assert_eq!(graph.initializer[1].raw_data, bytes[16..32]);
        assert!(graph.initializer.iter().all(|t| t.data_location.is_none() && t.external_data.is_empty()));
        // A link out of the folder, and a FIFO (opening one waits for a writer).
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.bin"), &bytes).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(outside.path().join("secret.bin"), dir.path().join("link.bin")).unwrap();
            let fifo = dir.path().join("fifo.bin");
            assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        }
        for (tensor, needle) in [
            (external("l", vec![2], "link.bin", None, Some(8)), "leads out of the model's folder"),
            (external("p", vec![2], "fifo.bin", None, Some(8)), "not a regular file"),
            (external("c", vec![2], "../w.bin", None, Some(8)), "plain file name"),
            (external("d", vec![2], "/etc/passwd", None, Some(8)), "plain file name"),
            (external("e", vec![4], "w.bin", Some(24), Some(16)), "past its end"),
            (external("f", vec![3], "w.bin", Some(0), Some(8)), "need 12"),
            (external("g", vec![2], "missing.bin", None, None), "cannot read"),
        ] {
            let mut graph = GraphProto { initializer: vec![tensor], ..Default::default() };
            let e = inline_external_data(&mut graph, dir.path()).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
