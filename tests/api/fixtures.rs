//! Files of each type, built in code: the real magic numbers, then filler bytes.

pub struct Upload {
    pub name: String,
    pub declared_type: String,
    pub bytes: Vec<u8>,
}

impl Upload {
    pub fn new(name: &str, declared_type: &str, bytes: Vec<u8>) -> Upload {
        Upload {
            name: name.into(),
            declared_type: declared_type.into(),
            bytes,
        }
    }
}

/// Deterministic pseudo-random filler (xorshift), so payloads are not compressible.
pub fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn with_filler(head: &[u8], len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = head.to_vec();
    bytes.extend(filler(len, seed));
    bytes
}

pub fn png(len: usize) -> Vec<u8> {
    with_filler(
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89",
        len,
        1,
    )
}

pub fn jpeg(len: usize) -> Vec<u8> {
    let mut bytes = with_filler(
        b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0",
        len,
        2,
    );
    bytes.extend(b"\xff\xd9");
    bytes
}

pub fn pdf(len: usize) -> Vec<u8> {
    let mut bytes =
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n".to_vec();
    bytes.extend(filler(len, 3));
    bytes.extend(b"\n%%EOF\n");
    bytes
}

/// A ZIP whose first entry is `word/document.xml`: what sniffers take for a DOCX.
pub fn docx(len: usize) -> Vec<u8> {
    let name = b"word/document.xml";
    let mut bytes = b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
    bytes.extend([0u8; 12]); // crc, sizes
    bytes.extend((name.len() as u16).to_le_bytes());
    bytes.extend([0u8; 2]); // extra length
    bytes.extend(name);
    bytes.extend(filler(len, 4));
    bytes
}

pub fn mp3(len: usize) -> Vec<u8> {
    with_filler(b"ID3\x04\x00\x00\x00\x00\x00\x00", len, 5)
}

pub fn mp4(len: usize) -> Vec<u8> {
    with_filler(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", len, 6)
}

pub fn csv() -> Vec<u8> {
    b"name,city,joined\nAl\xc3\xafce,Paris,2026-01-02\nBob,\"Oslo, NO\",2026-03-04\n".to_vec()
}

pub fn text() -> Vec<u8> {
    "Meeting notes\n\u{2014} caf\u{e9} at ten\n\ttabs and\r\nnewlines\n"
        .as_bytes()
        .to_vec()
}

pub fn elf() -> Vec<u8> {
    let mut bytes = b"\x7fELF\x02\x01\x01\x00".to_vec();
    bytes.resize(64, 0);
    bytes.extend(filler(4096, 7));
    bytes
}
