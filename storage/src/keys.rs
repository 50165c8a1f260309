//! Order-preserving key encoding: the byte order of encoded keys equals the order of
//! the values they encode, for every type, negative numbers included. Composite keys
//! are the concatenation of their encoded parts; every part is self-delimiting so a
//! shorter composite never sorts in the middle of a longer one by accident.

/// Builds an order-preserving key out of typed parts.
#[derive(Debug, Default, Clone)]
pub struct KeyBuilder {
    buf: Vec<u8>,
}

impl KeyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.push(v as u8);
        self
    }

    /// Signed integers: big-endian with the sign bit flipped.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&((v as u64) ^ (1u64 << 63)).to_be_bytes());
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&((v as u32) ^ (1u32 << 31)).to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// IEEE-754 total order: flip all bits of negatives, only the sign bit of positives.
    /// NaN sorts above +inf; -0.0 sorts just below +0.0.
    pub fn f64(&mut self, v: f64) -> &mut Self {
        let bits = v.to_bits();
        let ordered = if bits >> 63 == 1 { !bits } else { bits ^ (1u64 << 63) };
        self.buf.extend_from_slice(&ordered.to_be_bytes());
        self
    }

    /// Fixed-width bytes (UUIDs): copied as they are.
    pub fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Variable-length bytes: 0x00 is escaped as 0x00 0xFF and the part ends with
    /// 0x00 0x01, so "a" < "a\0" < "ab" holds in byte order too.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        for &b in v {
            if b == 0 {
                self.buf.extend_from_slice(&[0, 0xFF]);
            } else {
                self.buf.push(b);
            }
        }
        self.buf.extend_from_slice(&[0, 1]);
        self
    }

    pub fn text(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads back what [`KeyBuilder`] wrote, part by part.
pub struct KeyReader<'a> {
    buf: &'a [u8],
}

impl<'a> KeyReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Some(a)
    }

    pub fn bool(&mut self) -> Option<bool> {
        self.take(1).map(|b| b[0] != 0)
    }

    pub fn i64(&mut self) -> Option<i64> {
        let b: [u8; 8] = self.take(8)?.try_into().ok()?;
        Some((u64::from_be_bytes(b) ^ (1u64 << 63)) as i64)
    }

    pub fn i32(&mut self) -> Option<i32> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some((u32::from_be_bytes(b) ^ (1u32 << 31)) as i32)
    }

    pub fn u64(&mut self) -> Option<u64> {
        let b: [u8; 8] = self.take(8)?.try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }

    pub fn f64(&mut self) -> Option<f64> {
        let b: [u8; 8] = self.take(8)?.try_into().ok()?;
        let ordered = u64::from_be_bytes(b);
        let bits = if ordered >> 63 == 1 {
            ordered ^ (1u64 << 63)
        } else {
            !ordered
        };
        Some(f64::from_bits(bits))
    }

    pub fn fixed(&mut self, n: usize) -> Option<&'a [u8]> {
        self.take(n)
    }

    pub fn bytes(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let b = *self.buf.get(i)?;
            if b == 0 {
                match *self.buf.get(i + 1)? {
                    0xFF => out.push(0),
                    1 => {
                        self.buf = &self.buf[i + 2..];
                        return Some(out);
                    }
                    _ => return None,
                }
                i += 2;
            } else {
                out.push(b);
                i += 1;
            }
        }
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when
/// no such key exists (the prefix is all 0xFF).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl Fn(&mut KeyBuilder)) -> Vec<u8> {
        let mut k = KeyBuilder::new();
        f(&mut k);
        k.finish()
    }

    #[test]
    fn integers_sort_like_values() {
        let vals = [i64::MIN, -1_000_000, -2, -1, 0, 1, 2, 1_000_000, i64::MAX];
        let keys: Vec<_> = vals
            .iter()
            .map(|v| {
                enc(|k| {
                    k.i64(*v);
                })
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for (v, key) in vals.iter().zip(&keys) {
            assert_eq!(KeyReader::new(key).i64(), Some(*v));
        }
        let vals32 = [i32::MIN, -5, 0, 5, i32::MAX];
        let keys: Vec<_> = vals32
            .iter()
            .map(|v| {
                enc(|k| {
                    k.i32(*v);
                })
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn floats_sort_like_values() {
        let vals = [f64::NEG_INFINITY, -1e300, -1.5, -0.0, 0.0, 1e-300, 2.5, f64::INFINITY];
        let keys: Vec<_> = vals
            .iter()
            .map(|v| {
                enc(|k| {
                    k.f64(*v);
                })
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for (v, key) in vals.iter().zip(&keys) {
            assert_eq!(KeyReader::new(key).f64().map(f64::to_bits), Some(v.to_bits()));
        }
    }

    #[test]
    fn bytes_sort_like_values_and_compose() {
        let vals: [&[u8]; 6] = [b"", b"\0", b"\0\0", b"a", b"a\0", b"ab"];
        let keys: Vec<_> = vals
            .iter()
            .map(|v| {
                enc(|k| {
                    k.bytes(v);
                })
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        // composite: (text, i64) keeps the order of the first part first
        let a = enc(|k| {
            k.text("a").i64(i64::MAX);
        });
        let b = enc(|k| {
            k.text("ab").i64(i64::MIN);
        });
        assert!(a < b);
        let mut r = KeyReader::new(&a);
        assert_eq!(r.bytes().as_deref(), Some(&b"a"[..]));
        assert_eq!(r.i64(), Some(i64::MAX));
        assert!(r.is_empty());
    }

    #[test]
    fn successor_bounds_prefix() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
    }
}
