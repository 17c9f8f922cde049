//! A streaming scanner for Chrome-trace JSON as the PyTorch profiler (Kineto) writes it.
//!
//! It never builds a document tree: it reads the text in bounded chunks, walks the top-level object, and for
//! every element of `traceEvents` pulls out only the fields the engine needs (`ph`, `cat`, `name`, `pid`,
//! `tid`, `ts`, `dur` and a few `args`), skipping everything else (the `args` of CPU ops, with their shape
//! arrays, are most of the bytes) with a byte-level skipper. Memory is one chunk buffer, grown only when a
//! single JSON value is larger than it (up to [`ReadLimits::max_value_bytes`]).
//!
//! Each event is parsed from a contiguous slice; when the slice ends inside the event, the scanner refills
//! its buffer and parses that event again from its start. Events are small, so the retry costs nothing.
//!
//! Speed: the walk runs once per key and value of millions of events, so the common forms (a key with its
//! colon right after it, an integer, a time of at most three decimals) are read by small functions inlined
//! into the walk, and anything else (blanks, escapes, long numbers, errors) by cold out-of-line ones. The
//! buffer is small (64 KiB) so that it and its stage-one index stay in the core's L2 cache between the two
//! passes over them (1 MiB buffers were measured a few percent slower).

use std::borrow::Cow;

use super::error::{Location, TraceError};
use super::reader::{ReadLimits, TraceReader};
use super::structural::Index;

/// Initial size of the chunk buffer (see the module's note on speed).
const CHUNK: usize = 1 << 16;

/// A `pid` or `tid`: Kineto writes integers, older and synthetic rows use strings (`"Spans"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum RawId<'a> {
    /// Absent.
    #[default]
    None,
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(Cow<'a, str>),
}

/// Launch configuration and occupancy of a kernel, from its `args`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KernelArgs {
    /// Grid dimensions.
    pub grid: [u32; 3],
    /// Block dimensions.
    pub block: [u32; 3],
    /// Registers per thread.
    pub registers_per_thread: u32,
    /// Static + dynamic shared memory in bytes.
    pub shared_memory: u32,
    /// Blocks per SM as CUPTI estimates it.
    pub blocks_per_sm: f32,
    /// Warps per SM.
    pub warps_per_sm: f32,
    /// Estimated achieved occupancy in percent.
    pub occupancy_pct: f32,
}

/// [`RawEvent::ph`] of a `ph` that is a string of more than one byte: no phase of the Trace Event Format.
pub const PH_NOT_A_LETTER: u8 = 0xFF;

/// The fields of one trace event that the engine uses. Strings borrow from the scanner's buffer.
#[derive(Debug, Clone, Default)]
pub struct RawEvent<'a> {
    /// `ph` (`X`, `i`, `s`, `f`, `M`, ...), one letter; 0 when absent or not a string, [`PH_NOT_A_LETTER`]
    /// when a string of another length (`"Xylophone"` is not `X`).
    pub ph: u8,
    /// `cat`, empty when absent. Text as bytes: the scanner checks the UTF-8 of everything it reads (all
    /// at once for an ASCII buffer), so converting each string again would be wasted.
    pub cat: Cow<'a, [u8]>,
    /// `name`, empty when absent (bytes of UTF-8 text, as `cat`).
    pub name: Cow<'a, [u8]>,
    /// `pid`.
    pub pid: RawId<'a>,
    /// `tid`.
    pub tid: RawId<'a>,
    /// Start in nanoseconds (the file's microseconds, exactly, to the nanosecond).
    pub ts_ns: Option<i64>,
    /// Duration in nanoseconds.
    pub dur_ns: Option<i64>,
    /// `args["External id"]`: the id of the CPU op (on CPU ops) or of the op that launched it (elsewhere).
    pub external_id: Option<i64>,
    /// `args["correlation"]`: the CUPTI correlation id linking a runtime call with its GPU activity.
    pub correlation: Option<i64>,
    /// `args["Python id"]` of `python_function` events.
    pub python_id: Option<i64>,
    /// Kernel launch configuration, when the event has `grid`.
    pub kernel: Option<KernelArgs>,
    /// The raw JSON of `args["Input Dims"]`, `args["Input type"]` and `args["Concrete Inputs"]`
    /// (`record_shapes`), unparsed: the model builder parses them only for ops with a FLOP model, so the
    /// other ops' shapes cost a skip, as before.
    pub shapes: Option<RawShapes<'a>>,
}

impl RawEvent<'_> {
    /// Forgets what an `args` object set (before another `args` of the same event is read).
    fn clear_args(&mut self) {
        self.external_id = None;
        self.correlation = None;
        self.python_id = None;
        self.kernel = None;
        self.shapes = None;
    }
}

/// The unparsed shape arguments of a CPU op (JSON text of each value; empty when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawShapes<'a> {
    /// `Input Dims`: one array of sizes per input (`[]` for scalars, a list of arrays for tensor lists).
    pub dims: &'a [u8],
    /// `Input type`: one dtype string per input (`c10::BFloat16`, `float`, `Scalar`, ...).
    pub types: &'a [u8],
    /// `Concrete Inputs`: the values of scalar inputs as strings.
    pub concrete: &'a [u8],
}

/// Trace-level metadata found outside `traceEvents`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceMeta {
    /// `deviceProperties[].name`, by device id.
    pub devices: Vec<(i64, String)>,
    /// `traceName`, when present.
    pub trace_name: Option<String>,
    /// Number of elements of `traceEvents`.
    pub event_count: u64,
    /// Decompressed bytes read.
    pub bytes: u64,
    /// `distributedInfo.rank`: this process's rank in a distributed job (torch writes it for every process
    /// of an initialized process group; in vLLM, the tensor-parallel rank when pipeline parallelism is 1).
    pub rank: Option<u32>,
    /// `distributedInfo.world_size`.
    pub world_size: Option<u32>,
    /// Whether the document is a top-level array of events rather than an object.
    pub in_top_array: bool,
}

/// Why a parse of one unit stopped.
#[derive(Debug)]
enum Stop {
    /// The slice ended inside the unit: refill and retry.
    Incomplete,
    /// Malformed input at this position of the slice, and what is wrong. Boxed: every parsing function
    /// returns a `Result` with this error, and a one-word error keeps those results in registers.
    Bad(Box<(usize, String)>),
}

impl Stop {
    fn bad(at: usize, msg: impl Into<String>) -> Self {
        Stop::Bad(Box::new((at, msg.into())))
    }
}

type PResult<T> = Result<T, Stop>;

/// A cursor over the scanner's buffer (`b` is all of its filled part; positions are offsets in it).
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
    /// Stage one's bit index of `b`.
    idx: &'a Index,
}

fn bad<T>(i: usize, msg: impl Into<String>) -> PResult<T> {
    Err(Stop::bad(i, msg))
}

fn kind_of(c: u8) -> &'static str {
    match c {
        b'{' => "an object",
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        b'-' | b'0'..=b'9' => "a number",
        _ => "an invalid character",
    }
}

impl<'a> Cur<'a> {
    #[inline]
    fn ws(&mut self) -> PResult<u8> {
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Ok(c);
            }
            self.i += 1;
        }
        Err(Stop::Incomplete)
    }

    #[inline]
    fn expect(&mut self, c: u8, what: &str) -> PResult<()> {
        let got = self.ws()?;
        if got != c {
            return bad(self.i, format!("expected {what}, found {}", kind_of(got)));
        }
        self.i += 1;
        Ok(())
    }

    /// Reads a string whose opening quote is at `self.i`.
    #[inline]
    fn string(&mut self) -> PResult<Cow<'a, str>> {
        let start = self.i + 1;
        let close = self.idx.next_quote(start).ok_or(Stop::Incomplete)?;
        if self.idx.any_backslash(start, close) {
            return self.escaped_string(start);
        }
        self.i = close + 1;
        match std::str::from_utf8(&self.b[start..close]) {
            Ok(s) => Ok(Cow::Borrowed(s)),
            Err(e) => bad(start + e.valid_up_to(), "invalid UTF-8 in string"),
        }
    }

    /// Slow path for strings with escapes.
    fn escaped_string(&mut self, start: usize) -> PResult<Cow<'a, str>> {
        let mut out: Vec<u8> = Vec::new();
        let mut i = start;
        loop {
            let c = *self.b.get(i).ok_or(Stop::Incomplete)?;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *self.b.get(i + 1).ok_or(Stop::Incomplete)?;
                    i += 2;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut cp = self.hex4(i)?;
                            i += 4;
                            if (0xD800..0xDC00).contains(&cp) && self.b.get(i..i + 2).ok_or(Stop::Incomplete)? == b"\\u"
                            {
                                let lo = self.hex4(i + 2)?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                    i += 6;
                                }
                            }
                            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                            let mut tmp = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                        }
                        _ => return bad(i - 1, "invalid escape in string"),
                    }
                }
                c if c < 0x20 => return bad(i, control_in_string(c)),
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        self.i = i + 1;
        match String::from_utf8(out) {
            Ok(s) => Ok(Cow::Owned(s)),
            Err(e) => bad(start + e.utf8_error().valid_up_to(), "invalid UTF-8 in string"),
        }
    }

    fn hex4(&self, i: usize) -> PResult<u32> {
        let h = self.b.get(i..i + 4).ok_or(Stop::Incomplete)?;
        let s = std::str::from_utf8(h).map_err(|_| Stop::bad(i, "invalid \\u escape"))?;
        u32::from_str_radix(s, 16).map_err(|_| Stop::bad(i, "invalid \\u escape"))
    }

    /// Skips a string whose opening quote is at `self.i`.
    #[inline]
    fn skip_string(&mut self) -> PResult<()> {
        self.i = self.idx.next_quote(self.i + 1).ok_or(Stop::Incomplete)? + 1;
        Ok(())
    }

    /// Skips any JSON value starting at the next non-blank byte.
    #[inline(always)]
    fn skip_value(&mut self) -> PResult<()> {
        let c = self.ws()?;
        match c {
            b'"' => self.skip_string(),
            b'{' | b'[' => self.skip_container(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => self.not_a_value(c),
        }
    }

    #[cold]
    #[inline(never)]
    fn not_a_value(&self, c: u8) -> PResult<()> {
        bad(self.i, format!("expected a JSON value, found {}", kind_of(c)))
    }

    /// Skips a value and returns its text.
    fn raw_value(&mut self) -> PResult<&'a [u8]> {
        self.ws()?;
        let start = self.i;
        self.skip_value()?;
        Ok(&self.b[start..self.i])
    }

    fn literal(&mut self, lit: &[u8]) -> PResult<()> {
        let end = self.i + lit.len();
        let got = self.b.get(self.i..end).ok_or(Stop::Incomplete)?;
        if got != lit {
            return bad(self.i, "invalid literal");
        }
        self.i = end;
        // A literal must be followed by something, or the next chunk may extend it.
        if end >= self.b.len() {
            return Err(Stop::Incomplete);
        }
        Ok(())
    }

    #[inline]
    fn number_end(&self) -> PResult<usize> {
        let mut j = self.i;
        while j < self.b.len() {
            if !matches!(self.b[j], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                return Ok(j);
            }
            j += 1;
        }
        Err(Stop::Incomplete)
    }

    fn skip_number(&mut self) -> PResult<()> {
        self.i = self.number_end()?;
        Ok(())
    }

    /// Skips an object or array without looking at its content: the index counts its brackets.
    #[inline]
    fn skip_container(&mut self) -> PResult<()> {
        self.i = self.idx.skip_container(self.i).ok_or(Stop::Incomplete)?;
        Ok(())
    }

    /// An integer that must fit in i64; `None` (value skipped) when the value is not a number.
    #[inline(always)]
    fn int(&mut self) -> PResult<Option<i64>> {
        let c = self.ws()?;
        if !(c == b'-' || c.is_ascii_digit()) {
            self.skip_value()?;
            return Ok(None);
        }
        let start = self.i;
        // Fast path: up to 18 digits (no overflow possible) ended by a byte that cannot continue a number.
        let neg = c == b'-';
        let mut j = start + usize::from(neg);
        let mut v: i64 = 0;
        while j < self.b.len() && self.b[j].is_ascii_digit() && j - start < 18 {
            v = v * 10 + i64::from(self.b[j] - b'0');
            j += 1;
        }
        let digits = j - start - usize::from(neg);
        match self.b.get(j) {
            None => return Err(Stop::Incomplete),
            Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') => {}
            Some(_) if digits > 0 => {
                self.i = j;
                return Ok(Some(if neg { -v } else { v }));
            }
            Some(_) => {}
        }
        self.int_slow(start)
    }

    /// [`Self::int`] past its fast path (many digits, a float, an error), the number starting at `start`.
    #[cold]
    #[inline(never)]
    fn int_slow(&mut self, start: usize) -> PResult<Option<i64>> {
        self.i = start;
        let end = self.number_end()?;
        let text = &self.b[start..end];
        self.i = end;
        let s = std::str::from_utf8(text).map_err(|_| Stop::bad(start, "invalid number"))?;
        if s.bytes().all(|c| c.is_ascii_digit() || c == b'-') {
            return match s.parse::<i64>() {
                Ok(v) => Ok(Some(v)),
                Err(_) => bad(start, format!("integer {s} is out of range (beyond 64-bit)")),
            };
        }
        // A float where an integer id is expected: accept integral values only.
        match s.parse::<f64>() {
            Ok(v) if v.fract() == 0.0 && v.abs() < 9.0e18 => Ok(Some(v as i64)),
            Ok(_) => bad(start, format!("number {s} is not a 64-bit integer")),
            Err(_) => bad(start, format!("invalid number {s}")),
        }
    }

    /// A number as f64; `None` when not a number.
    fn float(&mut self) -> PResult<Option<f64>> {
        let c = self.ws()?;
        if !(c == b'-' || c.is_ascii_digit()) {
            self.skip_value()?;
            return Ok(None);
        }
        let start = self.i;
        let end = self.number_end()?;
        self.i = end;
        let s = std::str::from_utf8(&self.b[start..end]).map_err(|_| Stop::bad(start, "invalid number"))?;
        s.parse::<f64>().map(Some).map_err(|_| Stop::bad(start, format!("invalid number {s}")))
    }

    /// A time in microseconds, converted exactly to integer nanoseconds (rounded half up past 3 decimals).
    /// Some exporters write times as strings (`"ts": "1000.000"`, seen from Ascend's profiler); a string
    /// holding a number reads as that number, any other string is an error at its offset.
    #[inline(always)]
    fn micros_as_ns(&mut self) -> PResult<Option<i64>> {
        let c = self.ws()?;
        let start = self.i;
        if c == b'"' {
            let s = self.string()?;
            let t = s.trim();
            if t.is_empty() || !(t.as_bytes()[0] == b'-' || t.as_bytes()[0].is_ascii_digit()) {
                return bad(start, format!("time {s:?} is not a number"));
            }
            return micros_text_as_ns(t.as_bytes(), start).map(Some);
        }
        if !(c == b'-' || c.is_ascii_digit()) {
            self.skip_value()?;
            return Ok(None);
        }
        // Fast path, the form profilers write: `[-]digits[.ddd]`, at most 15 integer digits (no overflow)
        // and at most 3 decimals (exact in ns), ended by a byte that cannot continue a number.
        let b = self.b;
        let neg = c == b'-';
        let mut j = start + usize::from(neg);
        let int_start = j;
        let mut int: i64 = 0;
        // Profilers write epoch microseconds (13 or more digits): the first eight at once.
        if let Some(v) = eight_digits(b, j) {
            int = v as i64;
            j += 8;
        }
        while j < b.len() && b[j].is_ascii_digit() && j - int_start < 15 {
            int = int * 10 + i64::from(b[j] - b'0');
            j += 1;
        }
        let mut frac: i64 = 0;
        let mut scale: i64 = 1000;
        let mut plain = j > int_start;
        if plain && b.get(j) == Some(&b'.') {
            j += 1;
            let frac_start = j;
            while j < b.len() && b[j].is_ascii_digit() && j - frac_start < 3 {
                frac = frac * 10 + i64::from(b[j] - b'0');
                scale /= 10;
                j += 1;
            }
            plain = j > frac_start;
        }
        match b.get(j) {
            None => return Err(Stop::Incomplete),
            Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') => {}
            Some(_) if plain => {
                self.i = j;
                let ns = int * 1000 + frac * scale;
                return Ok(Some(if neg { -ns } else { ns }));
            }
            Some(_) => {}
        }
        self.micros_slow(start)
    }

    /// [`Self::micros_as_ns`] past its fast path, the number starting at `start`.
    #[cold]
    #[inline(never)]
    fn micros_slow(&mut self, start: usize) -> PResult<Option<i64>> {
        self.i = start;
        let end = self.number_end()?;
        self.i = end;
        micros_text_as_ns(&self.b[start..end], start).map(Some)
    }

    fn raw_id(&mut self) -> PResult<RawId<'a>> {
        match self.ws()? {
            b'"' => Ok(RawId::Str(self.string()?)),
            b'-' | b'0'..=b'9' => Ok(self.int()?.map_or(RawId::None, RawId::Int)),
            _ => {
                self.skip_value()?;
                Ok(RawId::None)
            }
        }
    }

    /// Reads a key and the colon after it; the opening quote is the next non-blank byte. Keys are compared
    /// as bytes and not validated here: the whole event's bytes are validated once after it is parsed.
    /// Inlined into every object walk: the usual key (no escape, the colon right after it) costs one bit
    /// search and two byte compares; anything else goes to [`Self::key_slow`].
    #[inline(always)]
    fn key(&mut self) -> PResult<Cow<'a, [u8]>> {
        if self.ws()? == b'"' {
            let start = self.i + 1;
            if let Some(close) = self.idx.next_quote(start)
                && self.b.get(close + 1) == Some(&b':')
                && !self.idx.any_backslash(start, close)
            {
                self.i = close + 2;
                return Ok(Cow::Borrowed(&self.b[start..close]));
            }
        }
        self.key_slow()
    }

    /// [`Self::key`] for any input: blanks before the colon, escapes, errors, the end of the buffer.
    #[cold]
    #[inline(never)]
    fn key_slow(&mut self) -> PResult<Cow<'a, [u8]>> {
        let c = self.ws()?;
        if c != b'"' {
            return bad(self.i, format!("expected an object key, found {}", kind_of(c)));
        }
        let start = self.i + 1;
        let close = self.idx.next_quote(start).ok_or(Stop::Incomplete)?;
        let k: Cow<'a, [u8]> = if self.idx.any_backslash(start, close) {
            match self.escaped_string(start)? {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            }
        } else {
            self.i = close + 1;
            Cow::Borrowed(&self.b[start..close])
        };
        self.expect(b':', "':' after an object key")?;
        Ok(k)
    }

    /// After a member: `,` (returns true, more members) or the closing byte (returns false).
    #[inline(always)]
    fn next_member(&mut self, close: u8) -> PResult<bool> {
        match self.ws()? {
            b',' => {
                self.i += 1;
                Ok(true)
            }
            c if c == close => {
                self.i += 1;
                Ok(false)
            }
            c => bad(self.i, format!("expected ',' or '{}', found {}", close as char, kind_of(c))),
        }
    }

    /// Parses one event object starting at the next non-blank byte into `ev`, which must be empty
    /// ([`RawEvent::default`]): filled in place, the event is not moved through return values.
    fn event(&mut self, ev: &mut RawEvent<'a>) -> PResult<()> {
        let c = self.ws()?;
        if c != b'{' {
            return bad(self.i, format!("a trace event must be an object, found {}", kind_of(c)));
        }
        self.i += 1;
        if self.ws()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            let k = self.key()?;
            match &*k {
                b"ph" => {
                    ev.ph = match &*self.opt_string()? {
                        [] => 0,
                        [c] => *c,
                        _ => PH_NOT_A_LETTER,
                    }
                }
                b"cat" => ev.cat = self.opt_string()?,
                b"name" => ev.name = self.opt_string()?,
                b"pid" => ev.pid = self.raw_id()?,
                b"tid" => ev.tid = self.raw_id()?,
                b"ts" => ev.ts_ns = self.micros_as_ns()?,
                b"dur" => ev.dur_ns = self.micros_as_ns()?,
                // Read where it stands, whatever the order of the keys (Kineto writes `args` last,
                // exporters that sort keys put it first): its shapes are kept for now, and dropped below
                // once the name says the op has no FLOP model and is not the model's token embedding. A
                // second `args` object replaces the first.
                b"args" if self.ws()? == b'{' => {
                    ev.clear_args();
                    self.args(ev)?;
                }
                _ => self.skip_value()?,
            }
            if !self.next_member(b'}')? {
                break;
            }
        }
        if ev.shapes.is_some()
            && !crate::roofline::flops::has_model_bytes(&ev.name)
            && ev.name.as_ref() != super::model::EMBEDDING_OP
        {
            ev.shapes = None;
        }
        Ok(())
    }

    /// A string's bytes (unescaped; UTF-8 is checked for the whole step by the caller of [`step`]), or
    /// empty when the value is not a string.
    #[inline(always)]
    fn opt_string(&mut self) -> PResult<Cow<'a, [u8]>> {
        if self.ws()? != b'"' {
            self.skip_value()?;
            return Ok(Cow::Borrowed(b""));
        }
        let start = self.i + 1;
        let close = self.idx.next_quote(start).ok_or(Stop::Incomplete)?;
        if self.idx.any_backslash(start, close) {
            return Ok(match self.escaped_string(start)? {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            });
        }
        self.i = close + 1;
        Ok(Cow::Borrowed(&self.b[start..close]))
    }

    fn dims(&mut self) -> PResult<Option<[u32; 3]>> {
        if self.ws()? != b'[' {
            self.skip_value()?;
            return Ok(None);
        }
        self.i += 1;
        let mut out = [1u32; 3];
        let mut n = 0;
        if self.ws()? == b']' {
            self.i += 1;
            return Ok(Some(out));
        }
        loop {
            let v = self.int()?.unwrap_or(1);
            if n < 3 {
                out[n] = u32::try_from(v).unwrap_or(u32::MAX);
            }
            n += 1;
            if !self.next_member(b']')? {
                return Ok(Some(out));
            }
        }
    }

    fn args(&mut self, ev: &mut RawEvent<'a>) -> PResult<()> {
        if self.ws()? != b'{' {
            return self.skip_value();
        }
        self.i += 1;
        if self.ws()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            let k = self.key()?;
            match &*k {
                // torch 1.x wrote the key in lower case on runtime calls and GPU activities.
                b"External id" | b"external id" => ev.external_id = self.int()?,
                b"correlation" => ev.correlation = self.int()?,
                b"Python id" => ev.python_id = self.int()?,
                b"grid" => {
                    if let Some(g) = self.dims()? {
                        ev.kernel.get_or_insert_with(KernelArgs::default).grid = g;
                    }
                }
                b"block" => {
                    if let Some(g) = self.dims()? {
                        ev.kernel.get_or_insert_with(KernelArgs::default).block = g;
                    }
                }
                b"registers per thread" => {
                    let v = self.int()?;
                    ev.kernel.get_or_insert_with(KernelArgs::default).registers_per_thread =
                        v.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX));
                }
                b"shared memory" => {
                    let v = self.int()?;
                    ev.kernel.get_or_insert_with(KernelArgs::default).shared_memory =
                        v.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX));
                }
                b"blocks per SM" => {
                    let v = self.float()?;
                    ev.kernel.get_or_insert_with(KernelArgs::default).blocks_per_sm = v.unwrap_or(0.0) as f32;
                }
                b"warps per SM" => {
                    let v = self.float()?;
                    ev.kernel.get_or_insert_with(KernelArgs::default).warps_per_sm = v.unwrap_or(0.0) as f32;
                }
                b"est. achieved occupancy %" => {
                    let v = self.float()?;
                    ev.kernel.get_or_insert_with(KernelArgs::default).occupancy_pct = v.unwrap_or(0.0) as f32;
                }
                b"Input Dims" => ev.shapes.get_or_insert_with(RawShapes::default).dims = self.raw_value()?,
                b"Input type" => ev.shapes.get_or_insert_with(RawShapes::default).types = self.raw_value()?,
                b"Concrete Inputs" => ev.shapes.get_or_insert_with(RawShapes::default).concrete = self.raw_value()?,
                _ => self.skip_value()?,
            }
            if !self.next_member(b'}')? {
                return Ok(());
            }
        }
    }
}

/// Where the scanner is in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level value.
    Start,
    /// Inside the top-level object, before the first member.
    ObjectFirst,
    /// Inside the top-level object, after a member.
    ObjectNext,
    /// Inside `traceEvents` (or a top-level array), before the first event.
    EventsFirst,
    /// Inside `traceEvents`, after an event.
    EventsNext,
    /// After the top-level value.
    End,
    /// A part of a split trace reached the event where the next part starts (see [`Part`]).
    Boundary,
    /// A part of a split trace went past where the next part starts without an event starting there.
    Missed,
}

/// Where a scan starts and stops: the whole document, or one piece of its events for parallel parsing
/// ([`super::parallel`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Part {
    /// The reader starts at an event of the events array (a later piece), not at the document's start.
    pub inside_events: bool,
    /// The document is a top-level array of events (known from its first byte), not an object.
    pub top_array: bool,
    /// The offset, in the reader's bytes, of the event where the next piece starts: the scan stops when
    /// an event of the array starts exactly there.
    pub stop_at: Option<u64>,
}

/// How a scan of a [`Part`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartEnd {
    /// At the end of the document.
    Document,
    /// At `stop_at`, an event of the array starting there: the split there was sound.
    Boundary,
    /// Past `stop_at` without an event starting there, or at the end before it: the split was not at
    /// an event of the array, and the pieces cannot be used.
    Missed,
}

/// What a scan of a [`Part`] found, for the whole-document checks.
#[derive(Debug, Clone)]
pub(crate) struct Scanned {
    pub meta: TraceMeta,
    pub end: PartEnd,
    /// Whether the events array was entered (or the piece started inside it).
    pub saw_events: bool,
    /// Whether any event had `ph`.
    pub phased: bool,
    /// The first top-level keys, when the document had no events.
    pub top_keys: Vec<String>,
}

/// Result of one step of the top-level walk.
enum Step<'a> {
    /// Moved on without an event.
    Moved(State),
    /// An event was handed to the sink (whether it had a `ph`), then go to the state. The event goes to
    /// the sink from inside the step, not through this value: moving it out cost a copy per event.
    Event(bool, State),
    /// A top-level member that the scanner keeps (key, raw JSON value).
    Member(Cow<'a, [u8]>, &'a [u8]),
}

/// The checks that need the whole document: an array of objects without `ph`, or an object without
/// `traceEvents`, is some other JSON file, refused rather than read as a trace without events.
/// `top_array`-ness and the flags come from the scan of the whole document or of its first piece.
pub(crate) fn check_document(file: &std::path::Path, s: &Scanned, events: u64) -> Result<(), TraceError> {
    if s.meta.in_top_array && events > 0 && !s.phased {
        return Err(TraceError::NotATrace {
            file: file.to_path_buf(),
            what: "a JSON array of objects without `ph` (not trace events)".into(),
        });
    }
    if !s.saw_events {
        let what = if s.top_keys.iter().any(|k| k == "nodes") {
            "a PyTorch execution trace (`nodes`), not a Kineto trace; export the profiler's trace instead".to_string()
        } else if s.top_keys.is_empty() {
            "an empty JSON object".to_string()
        } else {
            format!("a JSON object with keys {}", s.top_keys.join(", "))
        };
        return Err(TraceError::NotATrace { file: file.to_path_buf(), what });
    }
    Ok(())
}

/// Scans the whole document or one piece of it (see [`Part`]); `sink` receives the events in order.
pub(crate) fn scan_part(
    reader: &mut TraceReader,
    limits: &ReadLimits,
    part: Part,
    sink: impl FnMut(&RawEvent<'_>),
) -> Result<Scanned, TraceError> {
    walk::<true>(reader, limits, part, sink)
}

/// How deep [`scan_only`] reads each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanDepth {
    /// Each event skipped as one JSON value (its brackets counted in the stage-one index), nothing read
    /// from it: the reading, the index and the top-level walk alone.
    Skip,
    /// Each event's fields read as the engine reads them, then dropped: the scanner without the model.
    Fields,
}

/// Reads a trace file (plain, gzip or zstd JSON) as the engine does, to `depth`, keeping nothing; returns
/// the number of events. For benchmarks: what reading and walking the text cost before anything is built
/// ([`super::Trace::open`] does the same walk and builds the model).
///
/// # Errors
/// As [`super::Trace::open`] for the file, the syntax of the document and of whatever `depth` reads.
pub fn scan_only(path: &std::path::Path, limits: &ReadLimits, depth: ScanDepth) -> Result<u64, TraceError> {
    let mut reader = TraceReader::open(path, *limits)?;
    let sink = |ev: &RawEvent<'_>| {
        std::hint::black_box(ev);
    };
    let scanned = match depth {
        ScanDepth::Skip => walk::<false>(&mut reader, limits, Part::default(), sink)?,
        ScanDepth::Fields => walk::<true>(&mut reader, limits, Part::default(), sink)?,
    };
    Ok(scanned.meta.event_count)
}

/// [`scan_part`], reading each event's fields when `FIELDS` (else skipping each event whole, for
/// [`scan_only`]; the sink then sees empty events).
fn walk<const FIELDS: bool>(
    reader: &mut TraceReader,
    limits: &ReadLimits,
    part: Part,
    mut sink: impl FnMut(&RawEvent<'_>),
) -> Result<Scanned, TraceError> {
    let mut buf: Vec<u8> = vec![0; CHUNK];
    let mut index = Index::default();
    let mut start = 0usize;
    let mut end = 0usize;
    let mut base: u64 = 0; // absolute offset of buf[0]
    let mut eof = false;
    let mut state = if part.inside_events { State::EventsFirst } else { State::Start };
    let mut meta = TraceMeta::default();
    let mut in_top_array = part.top_array;
    // Whether the file had a trace's events at all, and the first top-level keys when it did not.
    let mut saw_events = part.inside_events;
    let mut top_keys: Vec<String> = Vec::new();
    // Whether any event had a `ph`: a top-level array of other objects is some other JSON file.
    let mut phased = false;
    let file = reader.file().to_path_buf();
    let syntax = |offset: u64, message: String| TraceError::Syntax {
        location: Location { file: file.clone(), offset },
        message,
    };

    loop {
        if matches!(state, State::Boundary | State::Missed) {
            break;
        }
        if state == State::End {
            // Only blanks may follow the top-level value.
            let tail = &buf[start..end];
            if let Some(p) = tail.iter().position(|c| !matches!(c, b' ' | b'\n' | b'\r' | b'\t' | 0)) {
                return Err(syntax(base + (start + p) as u64, "unexpected data after the end of the trace".into()));
            }
            start = end;
            if eof {
                break;
            }
        }
        let step = if state == State::End {
            Err(Stop::Incomplete)
        } else {
            let mut c = Cur { b: &buf[..end], i: start, idx: &index };
            // Where the next piece starts, as an offset in the buffer (negative: already passed).
            let stop = part.stop_at.map(|s| s as i128 - base as i128);
            let r = step::<FIELDS>(&mut c, state, &mut in_top_array, stop, &mut sink);
            r.map(|s| (s, c.i - start))
        };
        match step {
            Ok((s, used)) => {
                // Validate the UTF-8 of everything consumed (skipped strings included); a buffer of ASCII
                // bytes only, as traces nearly always are, is valid as a whole.
                if index.non_ascii() && simdutf8::basic::from_utf8(&buf[start..start + used]).is_err() {
                    // The fast check says no; the standard one says where.
                    let at = std::str::from_utf8(&buf[start..start + used]).err().map_or(0, |e| e.valid_up_to());
                    return Err(syntax(base + (start + at) as u64, "invalid UTF-8".into()));
                }
                // Strings read without unescaping are not looked at byte by byte: the index says whether
                // one holds a raw control byte (the unescaping path refuses them as it goes).
                if let Some(at) = index.control_in_string(start, start + used) {
                    return Err(syntax(base + at as u64, control_in_string(buf[at])));
                }
                match s {
                    Step::Moved(next) => {
                        saw_events |= next == State::EventsFirst;
                        state = next;
                    }
                    Step::Event(has_ph, next) => {
                        meta.event_count += 1;
                        phased |= has_ph;
                        state = next;
                    }
                    Step::Member(key, raw) => {
                        if top_keys.len() < 6 {
                            top_keys.push(String::from_utf8_lossy(&key).into_owned());
                        }
                        keep_member(&key, raw, &mut meta);
                        state = State::ObjectNext;
                    }
                }
                start += used;
            }
            Err(Stop::Bad(b)) => {
                let (pos, message) = *b;
                return Err(syntax(base + pos as u64, message));
            }
            Err(Stop::Incomplete) => {
                if eof {
                    if state == State::End {
                        break;
                    }
                    let at = base + end as u64;
                    let message = if at == 0 {
                        "empty file: expected a JSON object with traceEvents".to_string()
                    } else {
                        "unexpected end of file (truncated trace?)".to_string()
                    };
                    return Err(syntax(at, message));
                }
                // Compact, grow if one value fills the whole buffer, then read more.
                if start > 0 {
                    buf.copy_within(start..end, 0);
                    base += start as u64;
                    end -= start;
                    start = 0;
                }
                if end == buf.len() {
                    if buf.len() >= limits.max_value_bytes {
                        return Err(syntax(
                            base,
                            format!("a single JSON value is larger than the limit of {} bytes", limits.max_value_bytes),
                        ));
                    }
                    let n = (buf.len() * 2).min(limits.max_value_bytes.max(CHUNK));
                    buf.resize(n, 0);
                }
                let n = reader.fill(&mut buf[end..])?;
                if n == 0 {
                    eof = true;
                }
                end += n;
                // buf[0] is where a step starts, outside any string: the index can start there.
                index.build(&buf[..end]);
            }
        }
    }
    if !matches!(state, State::End | State::Boundary | State::Missed) {
        return Err(syntax(base + end as u64, "unexpected end of file (truncated trace?)".into()));
    }
    let end = match (state, part.stop_at) {
        (State::Boundary, _) => PartEnd::Boundary,
        (_, Some(_)) => PartEnd::Missed,
        _ => PartEnd::Document,
    };
    meta.bytes = reader.produced();
    meta.in_top_array = in_top_array;
    Ok(Scanned { meta, end, saw_events, phased, top_keys })
}

/// One step of the walk over the top-level structure.
fn step<'a, const FIELDS: bool>(
    c: &mut Cur<'a>,
    state: State,
    in_top_array: &mut bool,
    stop: Option<i128>,
    sink: &mut impl FnMut(&RawEvent<'_>),
) -> PResult<Step<'a>> {
    match state {
        State::Start => match c.ws()? {
            b'{' => {
                c.i += 1;
                Ok(Step::Moved(State::ObjectFirst))
            }
            b'[' => {
                c.i += 1;
                *in_top_array = true;
                Ok(Step::Moved(State::EventsFirst))
            }
            x => bad(c.i, format!("a trace must be a JSON object (or an array of events), found {}", kind_of(x))),
        },
        State::ObjectFirst | State::ObjectNext => {
            if state == State::ObjectNext && !c.next_member(b'}')? {
                return Ok(Step::Moved(State::End));
            }
            if state == State::ObjectFirst && c.ws()? == b'}' {
                c.i += 1;
                return Ok(Step::Moved(State::End));
            }
            let key = c.key()?;
            if &*key == b"traceEvents" {
                let v = c.ws()?;
                if v != b'[' {
                    return bad(c.i, format!("traceEvents must be an array, found {}", kind_of(v)));
                }
                c.i += 1;
                return Ok(Step::Moved(State::EventsFirst));
            }
            let vstart = {
                c.ws()?;
                c.i
            };
            c.skip_value()?;
            Ok(Step::Member(key, &c.b[vstart..c.i]))
        }
        State::EventsFirst | State::EventsNext => {
            let close_to = if *in_top_array { State::End } else { State::ObjectNext };
            if state == State::EventsNext {
                if !c.next_member(b']')? {
                    return Ok(Step::Moved(close_to));
                }
                c.ws()?;
                if let Some(stop) = stop {
                    let at = c.i as i128;
                    if at == stop {
                        return Ok(Step::Moved(State::Boundary));
                    }
                    if at > stop {
                        // The next piece's first byte was inside this event or between: not an event start.
                        return Ok(Step::Moved(State::Missed));
                    }
                }
            } else if c.ws()? == b']' {
                c.i += 1;
                return Ok(Step::Moved(close_to));
            }
            let from = c.i;
            let mut ev = RawEvent::default();
            if FIELDS {
                c.event(&mut ev)?;
            } else {
                c.skip_value()?;
            }
            // The sink takes names as bytes: checked here, before it sees them, where the buffer is not
            // all ASCII (the caller checks everything consumed again, separators included).
            if c.idx.non_ascii()
                && let Err(e) = std::str::from_utf8(&c.b[from..c.i])
            {
                return bad(from + e.valid_up_to(), "invalid UTF-8");
            }
            let has_ph = ev.ph != 0;
            sink(&ev);
            Ok(Step::Event(has_ph, State::EventsNext))
        }
        State::End | State::Boundary | State::Missed => Err(Stop::Incomplete),
    }
}

/// The error for byte `c` (below 0x20) inside a string.
fn control_in_string(c: u8) -> String {
    format!("control character 0x{c:02x} inside a string (JSON requires it escaped, as \\u{c:04x})")
}

/// Keeps the top-level members the engine uses.
fn keep_member(key: &[u8], raw: &[u8], meta: &mut TraceMeta) {
    match key {
        b"deviceProperties" => {
            if let Ok(serde_json::Value::Array(devs)) = serde_json::from_slice::<serde_json::Value>(raw) {
                for d in devs {
                    let id = d.get("id").and_then(serde_json::Value::as_i64).unwrap_or(0);
                    if let Some(name) = d.get("name").and_then(serde_json::Value::as_str) {
                        meta.devices.push((id, name.to_string()));
                    }
                }
            }
        }
        b"distributedInfo" => {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(raw) {
                let get = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).and_then(|n| u32::try_from(n).ok());
                meta.rank = get("rank");
                meta.world_size = get("world_size");
            }
        }
        b"traceName" => {
            if let Ok(serde_json::Value::String(s)) = serde_json::from_slice::<serde_json::Value>(raw) {
                meta.trace_name = Some(s);
            }
        }
        _ => {}
    }
}

/// The value of the eight bytes at `at` when all are ASCII digits, read as one word (SWAR: "Faster Integer
/// Parsing", D. Lemire, 2018, and simdjson's `parse_eight_digits_unrolled`); `None` when fewer than eight
/// bytes remain or one is not a digit.
#[inline(always)]
fn eight_digits(b: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    let v = u64::from_le_bytes(bytes);
    // Each byte in 0x30..=0x39: high nibble 3, and adding 6 keeps the high nibble 3.
    let hi = 0xF0F0_F0F0_F0F0_F0F0u64;
    if (v & hi) | ((v.wrapping_add(0x0606_0606_0606_0606) & hi) >> 4) != 0x3333_3333_3333_3333 {
        return None;
    }
    // Pairs, then quads, then the eight digits (the first byte is the most significant digit).
    let v = ((v & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(2561)) >> 8;
    let v = ((v & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601)) >> 16;
    Some(((v & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001)) >> 32)
}

/// Decimal microseconds `t` (as JSON writes a number) in integer nanoseconds, exactly for up to three
/// decimals and rounded half up past them; `at` is the byte offset for errors.
fn micros_text_as_ns(t: &[u8], at: usize) -> PResult<i64> {
    let (neg, digits) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        _ => (false, t),
    };
    let mut int: i64 = 0;
    let mut k = 0;
    let overflow = || Stop::bad(at, "timestamp is out of range (beyond 64-bit nanoseconds)".to_string());
    while k < digits.len() && digits[k].is_ascii_digit() {
        int = int.checked_mul(10).and_then(|v| v.checked_add(i64::from(digits[k] - b'0'))).ok_or_else(overflow)?;
        k += 1;
    }
    if k == 0 {
        // JSON numbers start with a digit (after the sign): `-`, `-.5` or `.5` are not times.
        return Err(Stop::bad(at, format!("invalid number {}", String::from_utf8_lossy(t))));
    }
    let mut frac: i64 = 0;
    let mut scale = 100;
    let mut round = false;
    if k < digits.len() && digits[k] == b'.' {
        k += 1;
        let mut n = 0;
        while k < digits.len() && digits[k].is_ascii_digit() {
            if n < 3 {
                frac += i64::from(digits[k] - b'0') * scale;
                scale /= 10;
            } else if n == 3 {
                round = digits[k] >= b'5';
            }
            n += 1;
            k += 1;
        }
    }
    if k != digits.len() {
        // Exponent or other unusual form: fall back to f64.
        let s = std::str::from_utf8(t).map_err(|_| Stop::bad(at, "invalid number"))?;
        let v: f64 = s.parse().map_err(|_| Stop::bad(at, format!("invalid number {s}")))?;
        let ns = (v * 1000.0).round();
        if !ns.is_finite() || ns.abs() >= 9.2e18 {
            return Err(overflow());
        }
        return Ok(ns as i64);
    }
    let ns = int.checked_mul(1000).and_then(|v| v.checked_add(frac + i64::from(round))).ok_or_else(overflow)?;
    Ok(if neg { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::super::model::Trace;
    use super::*;

    #[test]
    fn eight_digits_at_once_or_none() {
        assert_eq!(eight_digits(b"12345678", 0), Some(12_345_678));
        assert_eq!(eight_digits(b"x5053031702489.285", 1), Some(50_530_317));
        assert_eq!(eight_digits(b"00000009", 0), Some(9));
        assert_eq!(eight_digits(b"99999999", 0), Some(99_999_999));
        assert_eq!(eight_digits(b"1234567", 0), None, "seven bytes");
        for bad in [b"1234567.", b"/2345678", b":2345678", b"1234 678", b"\xb12345678"] {
            assert_eq!(eight_digits(bad, 0), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // Every byte value in every position: a digit run only.
        for pos in 0..8 {
            for c in 0..=255u8 {
                let mut t = *b"11111111";
                t[pos] = c;
                let want = c.is_ascii_digit().then(|| t.iter().fold(0u64, |v, d| v * 10 + u64::from(d - b'0')));
                assert_eq!(eight_digits(&t, 0), want, "byte {c} at {pos}");
            }
        }
    }

    #[test]
    fn a_scan_for_benchmarks_counts_the_events_the_engine_reads_and_refuses_what_it_refuses() {
        let dir = tempfile::tempdir().expect("tmp");
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/h200-qwen2.5-1.5b/decode_bs64_step.pt.trace.json.zst");
        let limits = ReadLimits::default();
        let events = Trace::open(&fixture, &limits).expect("fixture").meta.event_count;
        assert!(events > 1000);
        for depth in [ScanDepth::Skip, ScanDepth::Fields] {
            assert_eq!(scan_only(&fixture, &limits, depth).expect("scan"), events, "{depth:?}");
        }
        // A field's value is read at `Fields` depth only; the document's syntax at both.
        let bad_ts = dir.path().join("ts.json");
        std::fs::write(&bad_ts, r#"{"traceEvents":[{"ph":"X","ts":"soon"}]}"#).expect("write");
        assert_eq!(scan_only(&bad_ts, &limits, ScanDepth::Skip).expect("skipped whole"), 1);
        assert!(scan_only(&bad_ts, &limits, ScanDepth::Fields).is_err());
        let cut = dir.path().join("cut.json");
        std::fs::write(&cut, r#"{"traceEvents":[{"ph":"X"}"#).expect("write");
        for depth in [ScanDepth::Skip, ScanDepth::Fields] {
            assert!(scan_only(&cut, &limits, depth).is_err(), "{depth:?}");
        }
    }

    fn read(events: &str) -> Trace {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.json");
        std::fs::write(&path, format!("{{\"traceEvents\":[{events}]}}")).expect("write");
        Trace::open(&path, &ReadLimits::default()).expect("a valid trace")
    }

    const SHAPES: &str = r#""Input Dims":[[8,16],[16,32]],"Input type":["float","float"],"Concrete Inputs":["",""]"#;

    #[test]
    fn args_are_read_where_they_stand_and_shapes_kept_for_modelled_ops_only() {
        // `args` first (sorted keys) and last (Kineto's order): the same event either way.
        let first = format!(
            r#"{{"args":{{"External id":5,{SHAPES}}},"cat":"cpu_op","dur":2,"name":"aten::mm","ph":"X","pid":1,"tid":1,"ts":1}}"#
        );
        let last = format!(
            r#"{{"ph":"X","cat":"cpu_op","name":"aten::mm","pid":1,"tid":1,"ts":1,"dur":2,"args":{{"External id":5,{SHAPES}}}}}"#
        );
        for e in [&first, &last] {
            let t = read(e);
            assert_eq!(t.events[0].external_id, 5, "{e}");
            assert!(t.work.get(&0).is_some(), "aten::mm with shapes is modelled: {e}");
        }
        // An op without a FLOP model keeps no shapes, whatever the order.
        let plain = first.replace("aten::mm", "aten::add");
        assert!(read(&plain).work.get(&0).is_none());
    }

    /// A source that gives at most `step` bytes per read, then, when `fail` is set, an I/O error where
    /// its bytes end (a pipe, a decoder, a broken stream).
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
        fail: bool,
    }

    impl std::io::Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.bytes.len() && self.fail {
                return Err(std::io::Error::other("connection reset"));
            }
            let n = self.step.min(buf.len()).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn trickle(text: &[u8], step: usize, fail: bool) -> Result<Trace, TraceError> {
        let src = Trickle { bytes: text.to_vec(), at: 0, step, fail };
        let limits = ReadLimits::default();
        let mut r = TraceReader::from_reader(src, std::path::Path::new("t.json"), limits)?;
        Trace::read(&mut r, &limits)
    }

    #[test]
    fn short_reads_give_the_same_trace_and_errors_after_the_bytes_before_them() {
        // One event far larger than the chunk buffer, among small ones, read a few bytes at a time.
        let big_args: String = (0..20_000).map(|i| format!("\"k{i}\":[1,2,3],")).collect();
        let text = format!(
            r#"{{"traceEvents":[{{"ph":"X","cat":"cpu_op","name":"a","pid":1,"tid":1,"ts":1,"dur":2,"args":{{"External id":7}}}},{{"ph":"X","cat":"cpu_op","name":"b","pid":1,"tid":1,"ts":3,"dur":1,"args":{{{big_args}"External id":8}}}}]}}"#
        );
        let whole = trickle(text.as_bytes(), usize::MAX, false).expect("whole");
        for step in [1, 7, 4096] {
            let t = trickle(text.as_bytes(), step, false).expect("trickled");
            assert_eq!(t.events.len(), 2);
            assert_eq!(format!("{:?}", t.events), format!("{:?}", whole.events), "step {step}");
        }
        // The source fails where the text ends: the document is complete only if the error is not
        // reported first. It is an error either way, never a trace.
        assert!(matches!(trickle(text.as_bytes(), 7, true), Err(TraceError::Io { .. })));
        // Under a decoder too: the file's read error (EIO, say) is the file's, not a corrupt stream (the
        // coordinator tries such reads of its stored copies again; it refuses corrupt ones).
        let zst = zstd::encode_all(text.as_bytes(), 3).expect("zstd");
        let cut = &zst[..zst.len() / 2];
        assert!(matches!(trickle(cut, 7, true), Err(TraceError::Io { .. })), "{:?}", trickle(cut, 7, true).err());
        assert!(matches!(trickle(cut, 7, false), Err(TraceError::Decompress { .. })), "a stream cut short is corrupt");
        // A syntax error in the last bytes before the failure point, read by the same refill that met
        // the failure, is reported as such, at its offset.
        let bad = text.replacen(r#""External id":8"#, r#""External id":tru"#, 1);
        for step in [7, 5000] {
            match trickle(bad.as_bytes(), step, true) {
                Err(TraceError::Syntax { location, message }) => {
                    assert_eq!(location.offset as usize, bad.rfind("tru").expect("there"), "{message}");
                }
                other => panic!("expected the syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_second_args_object_replaces_the_first() {
        let t = read(&format!(
            r#"{{"args":{{"External id":5,{SHAPES}}},"ph":"X","cat":"cpu_op","name":"aten::mm","pid":1,"tid":1,"ts":1,"dur":2,"args":{{"Ev Idx":3}}}}"#
        ));
        assert_eq!(t.events[0].external_id, 0, "the first args' id is gone");
        assert!(t.work.get(&0).is_none(), "and its shapes");
        // An `args` that is not an object is skipped and leaves the object's values.
        let t = read(
            r#"{"args":{"External id":5},"ph":"X","cat":"cpu_op","name":"aten::mm","pid":1,"tid":1,"ts":1,"dur":2,"args":null}"#,
        );
        assert_eq!(t.events[0].external_id, 5);
    }
}
