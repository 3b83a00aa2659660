//! XDF (Extensible Data Format, the LabStreamingLayer recording format) writer.
//! Spec: chunks of [NumLengthBytes u8][Length][Tag u16][content], after the magic "XDF:".
//! Written by hand: no maintained Rust crate writes XDF, and the format is a few chunk types.

/// Chunk tags.
const FILE_HEADER: u16 = 1;
const STREAM_HEADER: u16 = 2;
const SAMPLES: u16 = 3;
const BOUNDARY: u16 = 5;
const STREAM_FOOTER: u16 = 6;

/// The boundary chunk's fixed UUID (lets readers resynchronise after damage).
const BOUNDARY_UUID: [u8; 16] = [0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F, 0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4];

pub const MAGIC: &[u8] = b"XDF:";

fn varlen(out: &mut Vec<u8>, value: u64) {
    if value <= u64::from(u8::MAX) {
        out.push(1);
        out.push(value as u8);
    } else if value <= u64::from(u32::MAX) {
        out.push(4);
        out.extend_from_slice(&(value as u32).to_le_bytes());
    } else {
        out.push(8);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn chunk(out: &mut Vec<u8>, tag: u16, content: &[u8]) {
    varlen(out, content.len() as u64 + 2);
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(content);
}

/// Text as XML character data. Characters XML 1.0 does not allow (control characters other than
/// tab, newline and carriage return) become U+FFFD, so that any label a client sends still makes
/// a well-formed header.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

pub fn file_header(out: &mut Vec<u8>, datetime: &str) {
    let xml = format!(
        "<?xml version=\"1.0\"?><info><version>1.0</version><datetime>{}</datetime><writer>myelin</writer></info>",
        escape(datetime)
    );
    chunk(out, FILE_HEADER, xml.as_bytes());
}

/// What a stream header says.
pub struct StreamSpec<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub channels: &'a [(String, String, String)], // label, unit, type
    pub rate: f64,
    pub string_format: bool,
    pub source_id: &'a str,
    /// Extra XML placed inside <desc> (already escaped).
    pub desc: String,
}

pub fn stream_header(out: &mut Vec<u8>, id: u32, spec: &StreamSpec<'_>) {
    let mut channels = String::new();
    for (label, unit, kind) in spec.channels {
        channels.push_str(&format!(
            "<channel><label>{}</label><unit>{}</unit><type>{}</type></channel>",
            escape(label),
            escape(unit),
            escape(kind)
        ));
    }
    let xml = format!(
        "<?xml version=\"1.0\"?><info><name>{}</name><type>{}</type><channel_count>{}</channel_count><nominal_srate>{}</nominal_srate><channel_format>{}</channel_format><source_id>{}</source_id><desc><channels>{channels}</channels>{}</desc></info>",
        escape(spec.name),
        escape(spec.kind),
        spec.channels.len(),
        spec.rate,
        if spec.string_format { "string" } else { "float32" },
        escape(spec.source_id),
        spec.desc
    );
    let mut content = id.to_le_bytes().to_vec();
    content.extend_from_slice(xml.as_bytes());
    chunk(out, STREAM_HEADER, &content);
}

/// Float32 samples, row-major [timestamps.len() x channels], each with its timestamp.
pub fn samples_f32(out: &mut Vec<u8>, id: u32, timestamps: &[f64], values: &[f32]) {
    let channels = values.len() / timestamps.len().max(1);
    let mut content = id.to_le_bytes().to_vec();
    varlen(&mut content, timestamps.len() as u64);
    for (i, t) in timestamps.iter().enumerate() {
        content.push(8);
        content.extend_from_slice(&t.to_le_bytes());
        for v in &values[i * channels..(i + 1) * channels] {
            content.extend_from_slice(&v.to_le_bytes());
        }
    }
    chunk(out, SAMPLES, &content);
}

/// One-channel string samples.
pub fn samples_str(out: &mut Vec<u8>, id: u32, samples: &[(f64, String)]) {
    let mut content = id.to_le_bytes().to_vec();
    varlen(&mut content, samples.len() as u64);
    for (t, value) in samples {
        content.push(8);
        content.extend_from_slice(&t.to_le_bytes());
        varlen(&mut content, value.len() as u64);
        content.extend_from_slice(value.as_bytes());
    }
    chunk(out, SAMPLES, &content);
}

pub fn boundary(out: &mut Vec<u8>) {
    chunk(out, BOUNDARY, &BOUNDARY_UUID);
}

pub fn stream_footer(out: &mut Vec<u8>, id: u32, first: f64, last: f64, count: u64) {
    let xml = format!(
        "<?xml version=\"1.0\"?><info><first_timestamp>{first}</first_timestamp><last_timestamp>{last}</last_timestamp><sample_count>{count}</sample_count></info>"
    );
    let mut content = id.to_le_bytes().to_vec();
    content.extend_from_slice(xml.as_bytes());
    chunk(out, STREAM_FOOTER, &content);
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaped_text_is_well_formed_xml_character_data() {
        assert_eq!(super::escape("a<b>&\"c\u{1}\u{0}d\te"), "a&lt;b&gt;&amp;&quot;c\u{FFFD}\u{FFFD}d\te");
    }

    use super::*;

    #[test]
    fn chunks_carry_their_length_tag_and_content() {
        let mut out = Vec::new();
        samples_f32(&mut out, 7, &[1.5], &[2.0, 3.0]);
        // 1 length byte, length = 2 (tag) + 4 (id) + 2 (count) + 1 + 8 + 8 = 25
        assert_eq!(&out[..2], &[1, 25]);
        assert_eq!(&out[2..4], &SAMPLES.to_le_bytes());
        assert_eq!(&out[4..8], &7u32.to_le_bytes());
        assert_eq!(&out[8..10], &[1, 1]);
        assert_eq!(out[10], 8);
        assert_eq!(&out[11..19], &1.5f64.to_le_bytes());
        assert_eq!(out.len(), 2 + 25);
    }

    #[test]
    fn long_chunks_use_four_length_bytes() {
        let mut out = Vec::new();
        samples_str(&mut out, 1, &[(0.0, "x".repeat(300))]);
        assert_eq!(out[0], 4);
    }
}
