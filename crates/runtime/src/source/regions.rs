//! Where each initializer's `raw_data` lies in an ONNX file, found by walking the protobuf's
//! wire format without decoding it (the weights are skipped, not read). Loading frees a weight
//! whose bytes are the file's own and reads it again from here once tract has parsed the graph,
//! so the weights and the parse never take memory at the same time ([`crate::handover`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};

/// Where a model's bytes can be read again.
#[derive(Debug, Clone)]
pub enum WeightSource {
    /// The ONNX file at this path.
    File(std::path::PathBuf),
    /// ONNX bytes that live as long as the program (a model embedded in the binary).
    Static(&'static [u8]),
}

impl WeightSource {
    /// A reader of the model's bytes from the start.
    pub(crate) fn open(&self) -> std::io::Result<Box<dyn ReadSeek>> {
        Ok(match self {
            WeightSource::File(path) => Box::new(BufReader::new(std::fs::File::open(path)?)),
            WeightSource::Static(bytes) => Box::new(std::io::Cursor::new(*bytes)),
        })
    }
}

/// What the scanner reads from.
pub(crate) trait ReadSeek: BufRead + Seek {}
impl<T: BufRead + Seek> ReadSeek for T {}

/// `len` bytes from byte `offset` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub offset: u64,
    pub len: u64,
}

/// The region of `raw_data` of every initializer of the main graph, by name. A name that
/// appears twice (or a graph split over two fields, which protobuf merges) is left out, so
/// every region found is the one the decoded model holds.
pub(crate) fn raw_data_regions(reader: &mut dyn ReadSeek) -> std::io::Result<HashMap<String, Region>> {
    let end = reader.seek(SeekFrom::End(0))?;
    reader.seek(SeekFrom::Start(0))?;
    let mut wire = Wire { reader, pos: 0 };
    let mut found: HashMap<String, Option<Region>> = HashMap::new();
    let mut graphs = 0;
    while wire.pos < end {
        let (field, kind) = wire.key()?;
        if field == MODEL_GRAPH && kind == LEN {
            graphs += 1;
            let graph_end = wire.end_of_field(end)?;
            wire.graph(graph_end, &mut found)?;
        } else {
            wire.skip(kind)?;
        }
    }
    if wire.pos != end {
        return Err(Wire::invalid("the file ends inside a field"));
    }
    if graphs != 1 {
        return Ok(HashMap::new());
    }
    Ok(found.into_iter().filter_map(|(name, region)| Some((name, region?))).collect())
}

// Field numbers in onnx.proto (ModelProto.graph, GraphProto.initializer, TensorProto.name and
// .raw_data), then protobuf's wire types.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_NAME: u64 = 8;
const TENSOR_RAW_DATA: u64 = 9;
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

struct Wire<'a> {
    reader: &'a mut dyn ReadSeek,
    pos: u64,
}

impl Wire<'_> {
    fn invalid(what: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
    }

    fn byte(&mut self) -> std::io::Result<u8> {
        let mut b = [0u8];
        self.reader.read_exact(&mut b)?;
        self.pos += 1;
        Ok(b[0])
    }

    fn varint(&mut self) -> std::io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Self::invalid("varint longer than 10 bytes"))
    }

    /// Reads a length and returns where the field it starts ends, which must be within `end`
    /// (so no length read here can ask for more than the file holds).
    fn end_of_field(&mut self, end: u64) -> std::io::Result<u64> {
        let len = self.varint()?;
        self.pos.checked_add(len).filter(|&e| e <= end).ok_or_else(|| Self::invalid("a field runs past its message"))
    }

    fn key(&mut self) -> std::io::Result<(u64, u8)> {
        let key = self.varint()?;
        Ok((key >> 3, (key & 7) as u8))
    }

    fn forward(&mut self, count: u64) -> std::io::Result<()> {
        let step = i64::try_from(count).map_err(|_| Self::invalid("field longer than the file"))?;
        self.reader.seek_relative(step)?;
        self.pos += count;
        Ok(())
    }

    /// Moves past the value of a field of wire type `kind`.
    fn skip(&mut self, kind: u8) -> std::io::Result<()> {
        match kind {
            VARINT => self.varint().map(drop),
            I64 => self.forward(8),
            LEN => {
                let len = self.varint()?;
                self.forward(len)
            }
            I32 => self.forward(4),
            _ => Err(Self::invalid("unsupported protobuf wire type")),
        }
    }

    /// A `GraphProto` ending at byte `end`: each initializer's name and raw data region.
    fn graph(&mut self, end: u64, found: &mut HashMap<String, Option<Region>>) -> std::io::Result<()> {
        while self.pos < end {
            let (field, kind) = self.key()?;
            if field == GRAPH_INITIALIZER && kind == LEN {
                let tensor_end = self.end_of_field(end)?;
                let (name, region) = self.tensor(tensor_end)?;
                // A second initializer of one name: neither region can be trusted.
                let first = !found.contains_key(&name);
                found.insert(name, region.filter(|_| first));
            } else {
                self.skip(kind)?;
            }
        }
        if self.pos != end {
            return Err(Self::invalid("a graph's fields overrun it"));
        }
        Ok(())
    }

    /// A `TensorProto` ending at byte `end`: its name and the region of its raw data.
    fn tensor(&mut self, end: u64) -> std::io::Result<(String, Option<Region>)> {
        let (mut name, mut region) = (String::new(), None);
        let mut raw_fields = 0;
        while self.pos < end {
            let (field, kind) = self.key()?;
            match (field, kind) {
                (TENSOR_NAME, LEN) => {
                    let name_end = self.end_of_field(end)?;
                    let mut bytes = vec![
                        0u8;
                        usize::try_from(name_end - self.pos)
                            .map_err(|_| Self::invalid("a name longer than memory"))?
                    ];
                    self.reader.read_exact(&mut bytes)?;
                    self.pos = name_end;
                    name = String::from_utf8_lossy(&bytes).into_owned();
                }
                (TENSOR_RAW_DATA, LEN) => {
                    let len = self.end_of_field(end)? - self.pos;
                    raw_fields += 1;
                    region = Some(Region { offset: self.pos, len });
                    self.forward(len)?;
                }
                _ => self.skip(kind)?,
            }
        }
        if self.pos != end {
            return Err(Self::invalid("a tensor's fields overrun it"));
        }
        // Protobuf keeps the last of repeated scalar fields; two raw_data fields are left held.
        Ok((name, region.filter(|_| raw_fields == 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_initializers_region_holds_its_raw_data() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/sprites-cond-int8.onnx");
        let bytes = std::fs::read(&path).unwrap();
        let proto = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
        let regions = raw_data_regions(&mut *WeightSource::File(path).open().unwrap()).unwrap();
        let graph = proto.graph.unwrap();
        let with_raw: Vec<_> = graph.initializer.iter().filter(|t| !t.raw_data.is_empty()).collect();
        assert!(with_raw.len() > 20);
        assert_eq!(regions.len(), with_raw.len());
        for t in with_raw {
            let r = regions[&t.name];
            assert_eq!(&bytes[r.offset as usize..(r.offset + r.len) as usize], &t.raw_data[..], "{}", t.name);
        }
    }

    #[test]
    fn duplicate_names_and_broken_bytes_give_no_region() {
        let tensor = |name: &str, raw: &[u8]| tract_onnx::pb::TensorProto {
            name: name.into(),
            raw_data: raw.to_vec(),
            ..Default::default()
        };
        let graph = tract_onnx::pb::GraphProto {
            initializer: vec![tensor("a", b"1234"), tensor("b", b"xy"), tensor("a", b"5678")],
            ..Default::default()
        };
        let model = tract_onnx::pb::ModelProto { graph: Some(graph), ..Default::default() };
        let bytes: &'static [u8] = Box::leak(model.encode_to_vec().into_boxed_slice());
        let regions = raw_data_regions(&mut *WeightSource::Static(bytes).open().unwrap()).unwrap();
        assert_eq!(regions.keys().collect::<Vec<_>>(), ["b"]);
        let r = regions["b"];
        assert_eq!(&bytes[r.offset as usize..][..r.len as usize], b"xy");
        let cut: &'static [u8] = &bytes[..bytes.len() - 3];
        assert!(raw_data_regions(&mut *WeightSource::Static(cut).open().unwrap()).is_err());
    }
}
