//! A typed table: the one form of a full result table, rendered as CSV (text, with each float column's
//! fixed decimals) and as Parquet (typed columns, nulls for empty fields) by the same rows, so the two
//! files cannot disagree.

use std::fs;
use std::io;
use std::path::Path;

/// The type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text.
    Str,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float, written in CSV with this many decimals.
    Float(usize),
}

/// One column's name, type and whether it may be empty (null in Parquet, an empty field in CSV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Header / field name.
    pub name: String,
    /// Type.
    pub kind: Kind,
    /// May be null.
    pub nullable: bool,
}

/// One field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Str(String),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Empty (only in nullable columns).
    Null,
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A table being built row by row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Columns.
    pub columns: Vec<Column>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Table::default()
    }

    /// Adds a required column.
    pub fn col(&mut self, name: impl Into<String>, kind: Kind) -> &mut Self {
        self.columns.push(Column { name: name.into(), kind, nullable: false });
        self
    }

    /// Adds a nullable column.
    pub fn opt(&mut self, name: impl Into<String>, kind: Kind) -> &mut Self {
        self.columns.push(Column { name: name.into(), kind, nullable: true });
        self
    }

    /// Adds a row. A row of the wrong length, a value of the wrong type or a null in a required column
    /// is a bug in the writer, not bad input: it panics in debug builds and is written as it is otherwise
    /// (CSV), or refused by the Parquet writer with an error.
    pub fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len(), "row length");
        debug_assert!(
            row.iter().zip(&self.columns).all(|(v, c)| matches!(
                (v, c.kind, c.nullable),
                (Value::Str(_), Kind::Str, _)
                    | (Value::Int(_), Kind::Int, _)
                    | (Value::Float(_), Kind::Float(_), _)
                    | (Value::Null, _, true)
            )),
            "value types"
        );
        self.rows.push(row);
    }

    /// Writes the table as CSV (`b','`) or TSV (`b'\t'`) with the `csv` crate (RFC 4180 quoting).
    pub fn write_csv(&self, path: &Path, delimiter: u8) -> io::Result<()> {
        let mut w =
            csv::WriterBuilder::new().delimiter(delimiter).from_writer(io::BufWriter::new(fs::File::create(path)?));
        w.write_record(self.columns.iter().map(|c| c.name.as_str()))?;
        for row in &self.rows {
            w.write_record(row.iter().zip(&self.columns).map(|(v, c)| text(v, c.kind)))?;
        }
        w.flush()?;
        Ok(())
    }
}

/// A field's CSV text.
fn text(v: &Value, kind: Kind) -> String {
    match (v, kind) {
        (Value::Str(s), _) => s.clone(),
        (Value::Int(i), _) => i.to_string(),
        (Value::Float(f), Kind::Float(d)) => format!("{f:.d$}"),
        (Value::Float(f), _) => f.to_string(),
        (Value::Null, _) => String::new(),
    }
}
