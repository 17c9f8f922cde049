//! Writing a [`Table`] as Parquet: one row group, typed columns (`BYTE_ARRAY` UTF-8 strings, `INT64`,
//! `DOUBLE`; nullable columns `OPTIONAL`), Snappy-compressed, which pandas, polars and DuckDB read as
//! they are. Floats keep their full value (the CSV rounds them to its fixed decimals).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use super::table::{Kind, Table, Value};

/// Why a Parquet file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ParquetWriteError {
    /// The file could not be created or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The Parquet writer refused the data.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: String,
        /// The cause.
        source: ParquetError,
    },
}

impl From<ParquetWriteError> for std::io::Error {
    fn from(e: ParquetWriteError) -> Self {
        match e {
            ParquetWriteError::Io { source, .. } => source,
            e @ ParquetWriteError::Parquet { .. } => std::io::Error::other(e.to_string()),
        }
    }
}

/// Writes `table` to `path` (replacing it).
pub fn write_parquet(table: &Table, path: &Path) -> Result<(), ParquetWriteError> {
    let p = || path.display().to_string();
    let pq = |source| ParquetWriteError::Parquet { path: p(), source };
    let fields = table
        .columns
        .iter()
        .map(|c| {
            let (physical, logical) = match c.kind {
                Kind::Str => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
                Kind::Int => (PhysicalType::INT64, None),
                Kind::Float(_) => (PhysicalType::DOUBLE, None),
            };
            Type::primitive_type_builder(&c.name, physical)
                .with_repetition(if c.nullable { Repetition::OPTIONAL } else { Repetition::REQUIRED })
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(pq)?;
    let schema = Arc::new(Type::group_type_builder("schema").with_fields(fields).build().map_err(pq)?);
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let file = fs::File::create(path).map_err(|source| ParquetWriteError::Io { path: p(), source })?;
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(pq)?;
    let mut group = writer.next_row_group().map_err(pq)?;
    let mut i = 0;
    while let Some(mut col) = group.next_column().map_err(pq)? {
        let c = &table.columns[i];
        let values = table.rows.iter().map(|r| r.get(i).unwrap_or(&Value::Null));
        let def: Vec<i16> = values.clone().map(|v| i16::from(!matches!(v, Value::Null))).collect();
        let def = c.nullable.then_some(def.as_slice());
        let wrong = |v: &Value| {
            pq(ParquetError::General(format!("column `{}`: value {v:?} does not fit its type {:?}", c.name, c.kind)))
        };
        match c.kind {
            Kind::Str => {
                let mut out = Vec::with_capacity(table.rows.len());
                for v in values {
                    match v {
                        Value::Str(s) => out.push(ByteArray::from(s.as_str())),
                        Value::Null if c.nullable => {}
                        v => return Err(wrong(v)),
                    }
                }
                col.typed::<ByteArrayType>().write_batch(&out, def, None).map_err(pq)?;
            }
            Kind::Int => {
                let mut out = Vec::with_capacity(table.rows.len());
                for v in values {
                    match v {
                        Value::Int(x) => out.push(*x),
                        Value::Null if c.nullable => {}
                        v => return Err(wrong(v)),
                    }
                }
                col.typed::<Int64Type>().write_batch(&out, def, None).map_err(pq)?;
            }
            Kind::Float(_) => {
                let mut out = Vec::with_capacity(table.rows.len());
                for v in values {
                    match v {
                        Value::Float(x) => out.push(*x),
                        Value::Null if c.nullable => {}
                        v => return Err(wrong(v)),
                    }
                }
                col.typed::<DoubleType>().write_batch(&out, def, None).map_err(pq)?;
            }
        }
        col.close().map_err(pq)?;
        i += 1;
    }
    group.close().map_err(pq)?;
    writer.close().map_err(pq)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;

    #[test]
    fn a_table_reads_back_with_its_types_and_nulls() {
        let mut t = Table::new();
        t.col("name", Kind::Str).col("calls", Kind::Int).col("mean_us", Kind::Float(3)).opt("tflops", Kind::Float(3));
        t.push(vec!["aten::mm".into(), Value::Int(48), Value::Float(4.56789), Value::Float(1.5)]);
        t.push(vec!["void f<int>(\"x\")".into(), Value::Int(1), Value::Float(0.0), Value::Null]);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.parquet");
        write_parquet(&t, &path).expect("written");
        let r = SerializedFileReader::new(fs::File::open(&path).expect("open")).expect("parquet");
        let schema = r.metadata().file_metadata().schema_descr_ptr();
        let types: Vec<_> = schema.columns().iter().map(|c| c.physical_type()).collect();
        assert_eq!(
            types,
            vec![PhysicalType::BYTE_ARRAY, PhysicalType::INT64, PhysicalType::DOUBLE, PhysicalType::DOUBLE]
        );
        let rows: Vec<_> = r.get_row_iter(None).expect("rows").collect::<Result<_, _>>().expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].get_string(0).expect("name"), "aten::mm");
        assert_eq!(rows[0].get_long(1).expect("calls"), 48);
        assert_eq!(rows[0].get_double(2).expect("mean"), 4.56789);
        assert_eq!(rows[1].get_string(0).expect("name"), "void f<int>(\"x\")");
        assert!(rows[1].get_double(3).is_err(), "null reads as no value");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused_naming_the_column() {
        let mut t = Table::new();
        t.col("calls", Kind::Int);
        t.rows.push(vec![Value::Str("x".into())]);
        let dir = tempfile::tempdir().expect("tempdir");
        let e = write_parquet(&t, &dir.path().join("t.parquet")).expect_err("refused").to_string();
        assert!(e.contains("column `calls`"), "{e}");
    }
}
