//! Stage one of the scanner: a bit index of where a buffer's JSON structure is, built 64 bytes at a time.
//!
//! The scanner (stage two, [`super::scan`]) walks events field by field, but most of a trace's bytes are
//! values it does not want (the `args` of CPU ops with their shape arrays, strings it skips). Finding the
//! end of those byte by byte was most of its time. This index marks, for every 64-byte block of the buffer,
//! the unescaped quotes, the backslashes, and the brackets and braces that lie *outside* strings, so that skipping a string is one bit search and skipping a nested value is a count of bits
//! (`count_ones`) over a few words, whatever their bytes. The method is the first stage of simdjson
//! (Langdale & Lemire, "Parsing Gigabytes of JSON per Second", VLDB Journal 2019): classify bytes with
//! vector compares, remove escaped quotes, and turn quote positions into an in-string mask with a prefix
//! XOR. The code here is written for this scanner: escapes are rare in traces, so they are resolved with a
//! short loop over the backslash bits of the few blocks that have any. The same pass notes bytes below
//! 0x20 inside strings (JSON requires them escaped): the scanner refuses them wherever it reads or skips a
//! string, at no per-byte cost of its own.
//!
//! On x86-64 the byte classification uses AVX2 where the CPU has it (detected at run time) and SSE2 (part
//! of the x86-64 baseline) otherwise; elsewhere a portable loop builds the same masks. The vector loads
//! are the only `unsafe` code of the workspace, here and nowhere else.
//!
//! The index of a buffer is exact for any byte content: a position is reported only if it is a real
//! structural byte or unescaped quote given that the buffer starts outside any string (the scanner only
//! indexes from such a position: the start of an event or of the document). Invalid JSON cannot make it
//! report a position outside the buffer.

/// Masks of one 64-byte block; bit `k` stands for byte `64·block + k`.
#[derive(Debug, Clone, Copy, Default)]
struct Block {
    /// Unescaped `"`.
    quote: u64,
    /// `{` and `[` outside strings.
    open: u64,
    /// `}` and `]` outside strings.
    close: u64,
    /// `\` anywhere (escapes are resolved from these).
    backslash: u64,
}

/// The bit index of one buffer. Rebuilt (reusing its memory) each time the scanner's buffer changes.
#[derive(Debug, Default)]
pub(crate) struct Index {
    blocks: Vec<Block>,
    /// Bytes indexed: positions at or past it are never reported.
    len: usize,
    /// Whether any byte is 0x80 or above (the scanner then validates UTF-8 as it goes; a pure-ASCII buffer
    /// is valid UTF-8 as a whole).
    non_ascii: bool,
    /// Whether any byte is a backslash (when none is, no string needs unescaping).
    backslashes: bool,
    /// Blocks with bytes below 0x20 inside strings, which JSON forbids unescaped: (block, mask). Nearly
    /// always empty, so a list rather than a mask per block.
    controls: Vec<(usize, u64)>,
}

/// Raw byte classes of one block (before strings are taken into account).
#[derive(Clone, Copy, Default)]
struct Raw {
    quote: u64,
    backslash: u64,
    open: u64,
    close: u64,
    high: u64,
    /// Bytes below 0x20.
    ctrl: u64,
}

/// Byte classification with SSE2 (16 bytes per compare) or AVX2 (32), chosen at run time.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Raw;
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };

    /// Classifies 64 bytes with SSE2, which every x86-64 CPU has.
    #[inline]
    pub(super) fn sse2(b: &[u8; 64]) -> Raw {
        // SAFETY: SSE2 is part of the x86-64 baseline; each load reads 16 bytes at 16·k, k < 4, inside `b`
        // (unaligned loads).
        unsafe {
            let splat = |c: u8| _mm_set1_epi8(c as i8);
            let (q, bs, ob, cb, lower) = (splat(b'"'), splat(b'\\'), splat(b'{'), splat(b'}'), splat(0x20));
            let mut r = Raw::default();
            for k in 0..4 {
                let v = _mm_loadu_si128(b.as_ptr().add(16 * k).cast::<__m128i>());
                // `[` | 0x20 == `{` and `]` | 0x20 == `}`; no other byte maps onto those two.
                let folded = _mm_or_si128(v, lower);
                let m = |x| u64::from(_mm_movemask_epi8(x) as u16) << (16 * k);
                r.quote |= m(_mm_cmpeq_epi8(v, q));
                r.backslash |= m(_mm_cmpeq_epi8(v, bs));
                r.open |= m(_mm_cmpeq_epi8(folded, ob));
                r.close |= m(_mm_cmpeq_epi8(folded, cb));
                let high = m(v);
                r.high |= high;
                // Signed, 0x20 > v holds for 0x00-0x1f and for the bytes from 0x80 (negative).
                r.ctrl |= m(_mm_cmpgt_epi8(lower, v)) & !high;
            }
            r
        }
    }

    /// Classifies 64 bytes with AVX2. Only called where the CPU has AVX2 (checked at run time), from
    /// code compiled for it.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn avx2(b: &[u8; 64]) -> Raw {
        let splat = |c: u8| _mm256_set1_epi8(c as i8);
        let (q, bs, ob, cb, lower) = (splat(b'"'), splat(b'\\'), splat(b'{'), splat(b'}'), splat(0x20));
        let mut r = Raw::default();
        for k in 0..2 {
            // SAFETY: reads 32 bytes at 32·k, k < 2, inside `b` (unaligned load).
            let v = unsafe { _mm256_loadu_si256(b.as_ptr().add(32 * k).cast::<__m256i>()) };
            let folded = _mm256_or_si256(v, lower);
            let m = |x| u64::from(_mm256_movemask_epi8(x) as u32) << (32 * k);
            r.quote |= m(_mm256_cmpeq_epi8(v, q));
            r.backslash |= m(_mm256_cmpeq_epi8(v, bs));
            r.open |= m(_mm256_cmpeq_epi8(folded, ob));
            r.close |= m(_mm256_cmpeq_epi8(folded, cb));
            let high = m(v);
            r.high |= high;
            // Signed, 0x20 > v holds for 0x00-0x1f and for the bytes from 0x80 (negative).
            r.ctrl |= m(_mm256_cmpgt_epi8(lower, v)) & !high;
        }
        r
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn classify(b: &[u8; 64]) -> Raw {
    let mut r = Raw::default();
    for (k, &c) in b.iter().enumerate() {
        let bit = 1u64 << k;
        match c | 0x20 {
            b'{' => r.open |= bit,
            b'}' => r.close |= bit,
            _ => {}
        }
        match c {
            b'"' => r.quote |= bit,
            b'\\' => r.backslash |= bit,
            _ => {}
        }
        if c >= 0x80 {
            r.high |= bit;
        }
        if c < 0x20 {
            r.ctrl |= bit;
        }
    }
    r
}

/// Bit `k` set: byte `k` is escaped by a backslash before it. `carry`: the previous block ended with an
/// escaping backslash (updated for the next block).
fn escaped(backslash: u64, carry: &mut bool) -> u64 {
    let mut esc = u64::from(*carry);
    // A backslash that is itself escaped escapes nothing.
    let mut escapers = backslash & !esc;
    *carry = false;
    while escapers != 0 {
        let p = escapers.trailing_zeros();
        escapers &= escapers - 1;
        if p == 63 {
            *carry = true;
        } else {
            let next = 1u64 << (p + 1);
            esc |= next;
            escapers &= !next;
        }
    }
    esc
}

/// Bit `k` of the result: XOR of bits `0..=k` of `x` (set from an opening quote up to, not including, its
/// closing quote).
#[inline]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Mask of bits at or above `k` (`k < 64`).
#[inline]
fn from_bit(k: usize) -> u64 {
    !0u64 << k
}

impl Index {
    /// Indexes `b`, which must start outside any string.
    pub(crate) fn build(&mut self, b: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe { self.build_avx2(b) };
            } else {
                self.build_with(b, x86::sse2);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.build_with(b, classify);
    }

    /// [`Self::build`] compiled for AVX2, so that the classification inlines into the loop.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn build_avx2(&mut self, b: &[u8]) {
        self.build_with(b, |block| x86::avx2(block));
    }

    #[inline(always)]
    fn build_with(&mut self, b: &[u8], classify: impl Fn(&[u8; 64]) -> Raw) {
        let n = b.len().div_ceil(64);
        self.blocks.clear();
        self.blocks.reserve(n);
        self.controls.clear();
        // Control bytes inside strings: only whether there are any, here (the list is built afterwards
        // in the rare buffer that has them, so that this loop stays as small as it was).
        let mut ctrl_seen = 0u64;
        self.len = b.len();
        let mut in_string = 0u64; // all ones while a string runs on into the next block
        let mut carry = false;
        let mut high = 0u64;
        let mut backslashes = 0u64;
        let mut chunks = b.chunks_exact(64);
        let mut push = |raw: Raw, blocks: &mut Vec<Block>| {
            high |= raw.high;
            backslashes |= raw.backslash;
            let esc = if raw.backslash == 0 && !carry { 0 } else { escaped(raw.backslash, &mut carry) };
            let quote = raw.quote & !esc;
            let inside = prefix_xor(quote) ^ in_string;
            in_string = ((inside as i64) >> 63) as u64;
            ctrl_seen |= raw.ctrl & inside;
            blocks.push(Block {
                quote,
                open: raw.open & !inside,
                close: raw.close & !inside,
                backslash: raw.backslash,
            });
        };
        for c in &mut chunks {
            let block: &[u8; 64] = c.try_into().unwrap_or(&[b' '; 64]);
            push(classify(block), &mut self.blocks);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // The tail is padded with blanks, which are nothing to the index.
            let mut block = [b' '; 64];
            block[..rest.len()].copy_from_slice(rest);
            push(classify(&block), &mut self.blocks);
        }
        self.non_ascii = high != 0;
        self.backslashes = backslashes != 0;
        if ctrl_seen != 0 {
            self.list_controls(b);
        }
    }

    /// Fills [`Self::controls`] from the built blocks: their quotes give the strings again.
    #[cold]
    #[inline(never)]
    fn list_controls(&mut self, b: &[u8]) {
        let mut in_string = 0u64;
        for (w, block) in self.blocks.iter().enumerate() {
            let inside = prefix_xor(block.quote) ^ in_string;
            in_string = ((inside as i64) >> 63) as u64;
            let bytes = &b[(64 * w).min(b.len())..(64 * w + 64).min(b.len())];
            let ctrl = bytes.iter().enumerate().filter(|(_, c)| **c < 0x20).fold(0u64, |m, (k, _)| m | 1 << k);
            if ctrl & inside != 0 {
                self.controls.push((w, ctrl & inside));
            }
        }
    }

    /// Whether the buffer holds bytes outside ASCII.
    #[inline]
    pub(crate) fn non_ascii(&self) -> bool {
        self.non_ascii
    }

    /// The first position `>= from` whose bit is set in the mask `pick` selects; `None` when there is none
    /// in the buffer.
    #[inline]
    fn next(&self, from: usize, pick: impl Fn(&Block) -> u64) -> Option<usize> {
        if from >= self.len {
            return None;
        }
        let mut w = from / 64;
        let mut m = pick(&self.blocks[w]) & from_bit(from % 64);
        loop {
            if m != 0 {
                let p = w * 64 + m.trailing_zeros() as usize;
                return (p < self.len).then_some(p);
            }
            w += 1;
            if w >= self.blocks.len() {
                return None;
            }
            m = pick(&self.blocks[w]);
        }
    }

    /// The first byte in `from..to` that is below 0x20 and inside a string (JSON requires those escaped),
    /// if any: one check of an empty list for nearly every buffer.
    #[inline(always)]
    pub(crate) fn control_in_string(&self, from: usize, to: usize) -> Option<usize> {
        if self.controls.is_empty() { None } else { self.listed_control(from, to) }
    }

    /// [`Self::control_in_string`] where the buffer has some: a binary search to the first listed block
    /// at or after `from`'s, then a look at the few bytes from there (the walk's steps ask once each, so
    /// a walk over a list from its start would cost steps × listed blocks on a crafted file).
    #[cold]
    #[inline(never)]
    fn listed_control(&self, from: usize, to: usize) -> Option<usize> {
        let first = self.controls.partition_point(|&(w, _)| w < from / 64);
        for &(w, mask) in &self.controls[first..] {
            let mut m = mask;
            while m != 0 {
                let p = w * 64 + m.trailing_zeros() as usize;
                if p >= to.min(self.len) {
                    return None;
                }
                if p >= from {
                    return Some(p);
                }
                m &= m - 1;
            }
        }
        None
    }

    /// The first unescaped quote at or after `from`.
    #[inline]
    pub(crate) fn next_quote(&self, from: usize) -> Option<usize> {
        self.next(from, |b| b.quote)
    }

    /// Whether a backslash lies in `from..to`.
    #[inline]
    pub(crate) fn any_backslash(&self, from: usize, to: usize) -> bool {
        if !self.backslashes || from >= to {
            return false;
        }
        let (wa, wb) = (from / 64, (to - 1) / 64);
        (wa..=wb).any(|w| {
            let mut m = self.blocks[w].backslash;
            if w == wa {
                m &= from_bit(from % 64);
            }
            if w == wb {
                m &= !0u64 >> (63 - (to - 1) % 64);
            }
            m != 0
        })
    }

    /// The position just past the bracket or brace that closes the one at `open` (brackets and braces
    /// are counted alike, as a skipper must); `None` when the buffer ends first.
    #[inline]
    pub(crate) fn skip_container(&self, open: usize) -> Option<usize> {
        if open >= self.len {
            return None;
        }
        let mut w = open / 64;
        let low = from_bit(open % 64);
        let mut opens = self.blocks[w].open & low;
        let mut closes = self.blocks[w].close & low;
        let mut depth: i64 = 0;
        loop {
            // Depth can only reach zero at a close; when this block has fewer closes than the depth at its
            // start, it cannot, and the whole block is counted at once.
            let count = |m: u64| i64::from(m.count_ones());
            if count(closes) < depth {
                depth += count(opens) - count(closes);
            } else {
                let mut c = closes;
                while c != 0 {
                    let k = c.trailing_zeros();
                    let below = (1u64 << k) - 1;
                    // Depth just after this close: what came in, plus opens, minus closes up to here.
                    let after = depth + count(opens & below) - count(closes & below) - 1;
                    if after <= 0 {
                        let p = w * 64 + k as usize + 1;
                        return (p <= self.len).then_some(p);
                    }
                    c &= c - 1;
                }
                depth += count(opens) - count(closes);
            }
            w += 1;
            if w >= self.blocks.len() {
                return None;
            }
            opens = self.blocks[w].open;
            closes = self.blocks[w].close;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index by a byte-by-byte reference: (quotes, structurals outside strings, backslashes, control
    /// bytes inside strings).
    fn reference(b: &[u8]) -> (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>) {
        let (mut quotes, mut structurals, mut bs, mut ctrl) = (vec![], vec![], vec![], vec![]);
        let (mut inside, mut escape) = (false, false);
        for (i, &c) in b.iter().enumerate() {
            if c == b'\\' {
                bs.push(i);
            }
            if c < 0x20 && inside {
                ctrl.push(i);
            }
            if escape {
                escape = false;
                continue;
            }
            match c {
                b'\\' => escape = true,
                b'"' => {
                    quotes.push(i);
                    inside = !inside;
                }
                b'{' | b'}' | b'[' | b']' if !inside => structurals.push(i),
                _ => {}
            }
        }
        (quotes, structurals, bs, ctrl)
    }

    fn check(b: &[u8]) {
        let mut idx = Index::default();
        idx.build(b);
        let (quotes, structurals, bs, ctrl) = reference(b);
        let mut got = vec![];
        let mut p = 0;
        while let Some(q) = idx.next_quote(p) {
            got.push(q);
            p = q + 1;
        }
        assert_eq!(got, quotes, "quotes of {:?}", String::from_utf8_lossy(b));
        let got: Vec<usize> = (0..b.len())
            .filter(|&i| {
                let (w, k) = (i / 64, i % 64);
                (idx.blocks[w].open | idx.blocks[w].close) & (1 << k) != 0
            })
            .collect();
        assert_eq!(got, structurals, "brackets of {:?}", String::from_utf8_lossy(b));
        for i in 0..=b.len() {
            for j in i..=b.len().min(i + 70) {
                assert_eq!(idx.any_backslash(i, j), bs.iter().any(|&k| k >= i && k < j));
                assert_eq!(idx.control_in_string(i, j), ctrl.iter().copied().find(|&k| k >= i && k < j));
            }
        }
    }

    #[test]
    fn quotes_and_structure_outside_strings_across_blocks() {
        check(br#"{"a":[1,2,{"b":"x,y:}"}],"c\"d":"\\","e":"\\\"]"}"#);
        // Strings and escape runs that cross 64-byte block edges, at every offset.
        for pad in 0..70 {
            let mut s = vec![b' '; pad];
            s.extend_from_slice(br#"{"k":"a\\\\\"[{,:}]\\","l":[["\\"],{"m":"\"\"\\\\"}]}"#);
            check(&s);
            let mut s = vec![b' '; pad];
            s.extend_from_slice(&[b'"'; 3]);
            s.extend_from_slice(&[b'\\'; 67]);
            s.extend_from_slice(b"\"x\",[1]");
            check(&s);
        }
    }

    #[test]
    fn control_bytes_are_found_inside_strings_only() {
        // Blanks between tokens are JSON's; a tab, newline or NUL inside a string is not (escaped ones are:
        // `\t` is a backslash and a `t`).
        for pad in 0..70 {
            let mut s = vec![b' '; pad];
            s.extend_from_slice(b"{\n\t\"a\":\t\"x\ty\",\r\n\"b\\t\":\"\\t\\n\",\"c\":\"\x00\x1f\x20\"}");
            check(&s);
            let mut idx = Index::default();
            idx.build(&s);
            let first = pad + 10; // the tab in "x\ty"
            assert_eq!(s[first], b'\t');
            assert_eq!(idx.control_in_string(0, s.len()), Some(first));
            assert_eq!(idx.control_in_string(first + 1, s.len()).map(|p| s[p]), Some(0));
        }
        let mut idx = Index::default();
        idx.build(b"{\n\t\"a\" : [1,\r\n 2]}\n");
        assert_eq!(idx.control_in_string(0, 30), None, "blanks outside strings");
    }

    #[test]
    fn containers_are_skipped_to_their_close() {
        let text = br#"{"args":{"Input Dims":[[16],[],[[1,2],[3]]],"s":"]}]}","t":{"u":[{}]}},"n":1}"#;
        for pad in 0..70 {
            let mut s = vec![b' '; pad];
            s.extend_from_slice(text);
            let mut idx = Index::default();
            idx.build(&s);
            assert_eq!(idx.skip_container(pad), Some(s.len()));
            let inner = pad + 8; // `{` of args
            assert_eq!(s[inner], b'{');
            let end = idx.skip_container(inner).expect("closed");
            assert_eq!(&s[end..end + 5], br#","n":"#);
            // Cut before the end: not found.
            let mut idx = Index::default();
            idx.build(&s[..s.len() - 1]);
            assert_eq!(idx.skip_container(pad), None);
        }
        // Deep nesting over several blocks.
        let deep: Vec<u8> = [vec![b'['; 200], vec![b']'; 200]].concat();
        let mut idx = Index::default();
        idx.build(&deep);
        assert_eq!(idx.skip_container(0), Some(400));
        assert_eq!(idx.skip_container(100), Some(300));
    }

    #[test]
    fn non_ascii_is_noticed() {
        let mut idx = Index::default();
        idx.build(b"{\"a\":\"plain\"}");
        assert!(!idx.non_ascii());
        idx.build("{\"a\":\"µs\"}".as_bytes());
        assert!(idx.non_ascii());
    }
}
