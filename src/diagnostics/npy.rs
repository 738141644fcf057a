//! Reading tensors for `flashmha diagnose --q/--k/--v`: NumPy `.npy` files (format versions
//! 1–3, little-endian `<f4` or `<f8`, C order) and raw little-endian f32 files whose shape the
//! caller supplies. Returns f32 values and the shape; reads only the file it is given.

use std::path::Path;

use crate::common::error::{Error, Result};

/// `.npy` magic string (NumPy format spec: "\x93NUMPY", then major and minor version bytes).
const MAGIC: &[u8] = b"\x93NUMPY";

/// A tensor read from disk: row-major f32 values and their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::BadInputFile {
        path: path.to_path_buf(),
        reason: why.to_string(),
    }
}

/// Reads `path`: `.npy` by its header; anything else as raw little-endian f32 of `raw_shape`.
pub fn read_tensor(path: &Path, raw_shape: &[usize]) -> Result<HostTensor> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, e))?;
    if bytes.starts_with(MAGIC) {
        parse_npy(&bytes).map_err(|why| bad(path, why))
    } else {
        let needed = byte_len(raw_shape, 4);
        if needed != Some(bytes.len()) {
            return Err(bad(
                path,
                format!(
                    "raw f32 file has {} bytes, shape {raw_shape:?} needs {}",
                    bytes.len(),
                    needed.map_or("more than usize::MAX".to_string(), |n| n.to_string())
                ),
            ));
        }
        Ok(HostTensor {
            shape: raw_shape.to_vec(),
            data: bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }
}

/// Bytes of a tensor of `shape` with `elem`-byte elements, `None` when the product overflows
/// (a shape no file can hold: refused, never wrapped).
fn byte_len(shape: &[usize], elem: usize) -> Option<usize> {
    shape.iter().try_fold(elem, |n, &d| n.checked_mul(d))
}

/// The parts of a `.npy` file: its dtype string (`descr`), its shape and its data bytes
/// (checked to be exactly `shape`'s elements of `elem_size(descr)` bytes by the callers).
struct NpyParts<'a> {
    descr: &'a str,
    shape: Vec<usize>,
    body: &'a [u8],
}

/// Splits a whole `.npy` file into header fields and data; C order only.
fn parse_parts(bytes: &[u8]) -> std::result::Result<NpyParts<'_>, String> {
    let major = *bytes.get(MAGIC.len()).ok_or("truncated header")?;
    let (header_len, start) = match major {
        1 => {
            let b = bytes.get(8..10).ok_or("truncated header")?;
            (u16::from_le_bytes([b[0], b[1]]) as usize, 10usize)
        }
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated header")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start.checked_add(header_len).ok_or("truncated header")?;
    let header = bytes.get(start..end).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")?;
    if fortran != "False" {
        return Err("Fortran-order arrays are not supported (save with C order)".into());
    }
    let shape_text = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let shape = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {shape_text}"))
        })
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    Ok(NpyParts {
        descr,
        shape,
        body: &bytes[end..],
    })
}

impl NpyParts<'_> {
    /// The data as `elem`-byte chunks, refused unless it holds exactly the shape's elements.
    fn chunks(&self, elem: usize) -> std::result::Result<std::slice::ChunksExact<'_, u8>, String> {
        match byte_len(&self.shape, elem) {
            Some(n) if n == self.body.len() => Ok(self.body.chunks_exact(elem)),
            needed => Err(format!(
                "data has {} bytes, shape {:?} needs {}",
                self.body.len(),
                self.shape,
                needed.map_or("more than usize::MAX".to_string(), |n| n.to_string())
            )),
        }
    }
}

/// Parses a whole `.npy` file of floats.
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<HostTensor, String> {
    let parts = parse_parts(bytes)?;
    let data: Vec<f32> = match parts.descr {
        "<f4" => parts
            .chunks(4)?
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "<f8" => parts
            .chunks(8)?
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        other => {
            return Err(format!(
                "dtype {other} is not supported (use float32 or float64)"
            ))
        }
    };
    Ok(HostTensor {
        shape: parts.shape,
        data,
    })
}

/// An integer array read from disk (e.g. per-token labels): row-major values and their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct IntTensor {
    pub shape: Vec<usize>,
    pub data: Vec<i64>,
}

/// Parses a whole `.npy` file of integers or booleans (`|b1`, `|i1`, `|u1`, `<i2`, `<u2`, `<i4`,
/// `<u4`, `<i8`, `<u8`); a `<u8` value above `i64::MAX` is refused. Floats are refused too:
/// labels are classes, and a float label would have to be rounded silently.
pub fn parse_npy_int(bytes: &[u8]) -> std::result::Result<IntTensor, String> {
    let parts = parse_parts(bytes)?;
    let data: Vec<i64> = match parts.descr {
        "|b1" | "|u1" => parts.chunks(1)?.map(|c| i64::from(c[0])).collect(),
        "|i1" => parts.chunks(1)?.map(|c| i64::from(c[0] as i8)).collect(),
        "<i2" => parts
            .chunks(2)?
            .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        "<u2" => parts
            .chunks(2)?
            .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        "<i4" => parts
            .chunks(4)?
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        "<u4" => parts
            .chunks(4)?
            .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        "<i8" => parts
            .chunks(8)?
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        "<u8" => parts
            .chunks(8)?
            .map(|c| {
                let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                i64::try_from(v).map_err(|_| format!("value {v} does not fit an i64"))
            })
            .collect::<std::result::Result<_, String>>()?,
        other => {
            return Err(format!(
                "dtype {other} is not supported for integer arrays (use an integer or bool dtype)"
            ))
        }
    };
    Ok(IntTensor {
        shape: parts.shape,
        data,
    })
}

/// Reads an integer `.npy` file ([`parse_npy_int`]); anything unreadable is
/// [`Error::BadInputFile`] naming the file.
pub fn read_int_npy(path: &Path) -> Result<IntTensor> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, e))?;
    if !bytes.starts_with(MAGIC) {
        return Err(bad(path, "not a .npy file (no \\x93NUMPY magic)"));
    }
    parse_npy_int(&bytes).map_err(|why| bad(path, why))
}

/// The text of `key`'s value in a NumPy header dict (`{'descr': '<f4', 'shape': (2, 3), }`).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    // A tuple runs to its ')'; anything else to the next ',' or '}'.
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// Writes `data` of `shape` as a version-1 `.npy` (`<f4`, C order): the inverse of
/// [`parse_npy`], used by tests and to save inputs for later runs.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy_bytes(path, "<f4", shape, &body)
}

/// Writes integer `data` of `shape` as a version-1 `.npy` (`<i8`, C order): the inverse of
/// [`parse_npy_int`] (label files for `diagnose --probe`).
pub fn write_npy_int(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy_bytes(path, "<i8", shape, &body)
}

/// A version-1 `.npy` of `descr` and `shape` holding `body` (little-endian elements, C order).
fn write_npy_bytes(path: &Path, descr: &str, shape: &[usize], body: &[u8]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad so that the data starts at a multiple of 64 bytes; the header ends with '\n'.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    std::fs::write(path, out).map_err(|e| bad(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_raw_files() {
        let dir = std::env::temp_dir().join(format!("flashmha-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<f32> = (0..24).map(|x| x as f32 * 0.5 - 3.0).collect();
        let npy = dir.join("x.npy");
        write_npy(&npy, &[2, 3, 4], &data).unwrap();
        let bytes = std::fs::read(&npy).unwrap();
        // Data offset is a multiple of 64, as NumPy writes it.
        assert_eq!((bytes.len() - data.len() * 4) % 64, 0);
        let t = read_tensor(&npy, &[]).unwrap();
        assert_eq!(t.shape, vec![2, 3, 4]);
        assert_eq!(t.data, data);

        let raw = dir.join("x.f32");
        let le: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&raw, &le).unwrap();
        assert_eq!(read_tensor(&raw, &[4, 6]).unwrap().data, data);
        assert!(read_tensor(&raw, &[5, 6]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A version-1 file with `header` (padded as NumPy pads it) and `body`.
    fn npy_bytes(header: &str, body: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        let unpadded = MAGIC.len() + 4 + h.len() + 1;
        h.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
        h.push('\n');
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn parses_headers_numpy_writes() {
        // What NumPy writes for np.arange(3, dtype='<f8').
        let body: Vec<u8> = [0.0f64, 1.0, 2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let ok = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }";
        let t = parse_npy(&npy_bytes(ok, &body)).unwrap();
        assert_eq!(t.shape, vec![3]);
        assert_eq!(t.data, vec![0.0, 1.0, 2.0]);
        let fortran = ok.replace("False", "True");
        assert!(parse_npy(&npy_bytes(&fortran, &body)).is_err());
        let int = ok.replace("<f8", "<i8");
        assert!(parse_npy(&npy_bytes(&int, &body)).is_err());
        let short = ok.replace("(3,)", "(4,)");
        assert!(parse_npy(&npy_bytes(&short, &body)).is_err());
        // A shape whose byte count overflows usize is refused, not wrapped (or a panic).
        let huge = ok.replace("(3,)", &format!("({}, 3)", usize::MAX));
        let err = parse_npy(&npy_bytes(&huge, &body)).unwrap_err();
        assert!(err.contains("more than usize::MAX"), "{err}");
        let dir = std::env::temp_dir().join(format!("flashmha_npy_raw_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("raw.f32");
        std::fs::write(&raw, [0u8; 8]).unwrap();
        assert!(read_tensor(&raw, &[usize::MAX, 2]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn integer_arrays_round_trip_and_floats_are_refused() {
        let dir = std::env::temp_dir().join(format!("flashmha_npy_int_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let labels = [3i64, -1, 0, i64::MAX, 7, 2];
        let path = dir.join("labels.npy");
        write_npy_int(&path, &[2, 3], &labels).unwrap();
        let t = read_int_npy(&path).unwrap();
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.data, labels);
        // Narrow and unsigned dtypes as NumPy writes them.
        let i1 = "{'descr': '|i1', 'fortran_order': False, 'shape': (3,), }";
        let t = parse_npy_int(&npy_bytes(i1, &[0xff, 1, 2])).unwrap();
        assert_eq!(t.data, vec![-1, 1, 2]);
        let u8_big = "{'descr': '<u8', 'fortran_order': False, 'shape': (1,), }";
        assert!(parse_npy_int(&npy_bytes(u8_big, &u64::MAX.to_le_bytes())).is_err());
        let f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }";
        assert!(parse_npy_int(&npy_bytes(f4, &1.0f32.to_le_bytes())).is_err());
        let short = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }";
        assert!(parse_npy_int(&npy_bytes(short, &[0; 4])).is_err());
        // Not a .npy at all, and a missing file: typed errors naming the file.
        let raw = dir.join("raw.bin");
        std::fs::write(&raw, [1u8, 2, 3]).unwrap();
        assert!(matches!(
            read_int_npy(&raw),
            Err(Error::BadInputFile { .. })
        ));
        assert!(matches!(
            read_int_npy(&dir.join("missing.npy")),
            Err(Error::BadInputFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
