//! XDF reader for replay: stream headers and samples of numeric (float32, double64, int8/16/32/
//! 64) and string streams. Clock offsets and footers are skipped (replay paces by the recorded
//! timestamps of each stream). XML headers are parsed with roxmltree.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum XdfError {
    #[error("{0}: not an XDF file (no XDF: magic)")]
    NotXdf(String),
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("corrupt XDF at byte {offset}: {reason}")]
    Corrupt { offset: usize, reason: String },
}

#[derive(Debug, Clone)]
pub struct XdfStream {
    pub id: u32,
    pub name: String,
    pub kind: String,
    pub channel_count: usize,
    pub rate: f64,
    pub format: String,
    pub labels: Vec<String>,
    pub timestamps: Vec<f64>,
    /// Numeric streams: row-major values.
    pub values: Vec<f32>,
    /// String streams: one value per sample (first channel).
    pub strings: Vec<String>,
}

impl XdfStream {
    pub fn is_string(&self) -> bool {
        self.format == "string"
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], XdfError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(XdfError::Corrupt { offset: self.at, reason: "truncated".into() })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, XdfError> {
        Ok(self.take(1)?[0])
    }
    fn varlen(&mut self) -> Result<u64, XdfError> {
        let offset = self.at;
        match self.u8()? {
            1 => Ok(u64::from(self.u8()?)),
            4 => Ok(u64::from(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))),
            8 => Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            other => Err(XdfError::Corrupt { offset, reason: format!("length field of {other} bytes") }),
        }
    }
    fn u32(&mut self) -> Result<u32, XdfError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn f64(&mut self) -> Result<f64, XdfError> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

fn value_size(format: &str) -> Option<usize> {
    Some(match format {
        "float32" | "int32" => 4,
        "double64" | "int64" => 8,
        "int16" => 2,
        "int8" => 1,
        _ => return None,
    })
}

fn to_f32(format: &str, b: &[u8]) -> f32 {
    match format {
        "float32" => f32::from_le_bytes(b.try_into().expect("4")),
        "double64" => f64::from_le_bytes(b.try_into().expect("8")) as f32,
        "int32" => i32::from_le_bytes(b.try_into().expect("4")) as f32,
        "int64" => i64::from_le_bytes(b.try_into().expect("8")) as f32,
        "int16" => f32::from(i16::from_le_bytes(b.try_into().expect("2"))),
        _ => f32::from(b[0] as i8),
    }
}

fn parse_header(id: u32, xml: &str, offset: usize) -> Result<XdfStream, XdfError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| XdfError::Corrupt { offset, reason: format!("stream header XML: {e}") })?;
    let info = doc.root_element();
    let text = |tag: &str| info.children().find(|n| n.has_tag_name(tag)).and_then(|n| n.text()).unwrap_or("").trim().to_string();
    let labels = info
        .descendants()
        .filter(|n| n.has_tag_name("channel"))
        .map(|c| c.children().find(|n| n.has_tag_name("label")).and_then(|n| n.text()).unwrap_or("").to_string())
        .collect();
    Ok(XdfStream {
        id,
        name: text("name"),
        kind: text("type"),
        channel_count: text("channel_count").parse().unwrap_or(0),
        rate: text("nominal_srate").parse().unwrap_or(0.0),
        format: text("channel_format"),
        labels,
        timestamps: Vec::new(),
        values: Vec::new(),
        strings: Vec::new(),
    })
}

/// Reads every stream of the file. A truncated last chunk (a recording cut short) ends the
/// read without an error: everything before it is returned.
pub fn read(path: &Path) -> Result<Vec<XdfStream>, XdfError> {
    let bytes = std::fs::read(path).map_err(|source| XdfError::Io { path: path.display().to_string(), source })?;
    if !bytes.starts_with(b"XDF:") {
        return Err(XdfError::NotXdf(path.display().to_string()));
    }
    let mut streams: Vec<XdfStream> = Vec::new();
    let mut cursor = Cursor { bytes: &bytes, at: 4 };
    while cursor.at < bytes.len() {
        let start = cursor.at;
        let Ok(length) = cursor.varlen() else { break };
        let Ok(body) = cursor.take(length as usize) else { break };
        let mut chunk = Cursor { bytes: body, at: 0 };
        let tag = u16::from_le_bytes(chunk.take(2)?.try_into().expect("2 bytes"));
        match tag {
            2 => {
                let id = chunk.u32()?;
                let xml = String::from_utf8_lossy(&body[chunk.at..]).into_owned();
                streams.push(parse_header(id, &xml, start)?);
            }
            3 => {
                let id = chunk.u32()?;
                let Some(stream) = streams.iter_mut().find(|s| s.id == id) else {
                    return Err(XdfError::Corrupt { offset: start, reason: format!("samples for unknown stream {id}") });
                };
                let n = chunk.varlen()?;
                let mut last = stream.timestamps.last().copied().unwrap_or(0.0);
                for _ in 0..n {
                    let ts = match chunk.u8()? {
                        8 => chunk.f64()?,
                        // No timestamp: the previous one plus a sample period (XDF convention).
                        _ => last + if stream.rate > 0.0 { 1.0 / stream.rate } else { 0.0 },
                    };
                    last = ts;
                    stream.timestamps.push(ts);
                    if stream.is_string() {
                        for channel in 0..stream.channel_count {
                            let len = chunk.varlen()? as usize;
                            let value = String::from_utf8_lossy(chunk.take(len)?).into_owned();
                            if channel == 0 {
                                stream.strings.push(value);
                            }
                        }
                    } else {
                        let size = value_size(&stream.format).ok_or(XdfError::Corrupt {
                            offset: start,
                            reason: format!("unsupported channel format {:?}", stream.format),
                        })?;
                        for _ in 0..stream.channel_count {
                            let format = stream.format.clone();
                            stream.values.push(to_f32(&format, chunk.take(size)?));
                        }
                    }
                }
            }
            _ => {} // file header, clock offsets, boundaries, footers
        }
    }
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::super::xdf;

    #[test]
    fn reads_back_what_the_writer_wrote_and_tolerates_truncation() {
        let mut bytes = xdf::MAGIC.to_vec();
        xdf::file_header(&mut bytes, "now");
        let channels = vec![("A".to_string(), "uV".to_string(), "EEG".to_string()), ("B".to_string(), "uV".to_string(), "EEG".to_string())];
        xdf::stream_header(
            &mut bytes,
            1,
            &xdf::StreamSpec {
                name: "eeg",
                kind: "EEG",
                channels: &channels,
                rate: 100.0,
                string_format: false,
                source_id: "s",
                desc: String::new(),
            },
        );
        let marker = vec![("code".to_string(), String::new(), "Markers".to_string())];
        xdf::stream_header(
            &mut bytes,
            2,
            &xdf::StreamSpec {
                name: "m",
                kind: "Markers",
                channels: &marker,
                rate: 0.0,
                string_format: true,
                source_id: "m",
                desc: String::new(),
            },
        );
        xdf::samples_f32(&mut bytes, 1, &[1.0, 1.01], &[1.0, 2.0, 3.0, 4.0]);
        xdf::samples_str(&mut bytes, 2, &[(1.005, "7".into())]);
        let complete = bytes.len();
        xdf::samples_f32(&mut bytes, 1, &[1.02], &[5.0, 6.0]);
        bytes.truncate(bytes.len() - 3); // cut inside the last chunk
        let path = std::env::temp_dir().join(format!("myelin-xdf-read-{}.xdf", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let streams = super::read(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert!(complete < bytes.len());
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].labels, vec!["A", "B"]);
        assert_eq!(streams[0].values, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(streams[0].timestamps, vec![1.0, 1.01]);
        assert_eq!(streams[1].strings, vec!["7"]);
    }
}
