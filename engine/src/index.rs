//! Secondary indexes: how their entries are encoded, kept in step with the rows, and
//! read.
//!
//! All of a table's indexes live in its index partition (`x<uid>`), apart from its rows
//! so that row scans never meet them. An entry's key is the index id, the user (for
//! per-user tables, so a lookup never leaves one user's entries), each indexed value
//! (a tag that puts NULL after every value, then the order-preserving encoding,
//! bit-inverted for a descending column) and the primary key; its value is the
//! primary key. Entries cover the rows of both tiers: a flush moves rows to Parquet
//! and leaves their entries, and the commit pipeline, which knows every row's previous
//! version whichever tier holds it, writes entry changes in the same batch as the rows.
//!
//! A read walks entry ranges for the primary keys, fetches those rows across both tiers
//! and applies its whole filter to them again, so an index only ever narrows a read.

pub mod build;
pub mod ddl;
pub mod plan;

use std::collections::BTreeMap;

use kalamdb_auth::identity::UserId;
use kalamdb_storage::hot_store::{HotStore, Partition};
use kalamdb_storage::keys::{KeyBuilder, prefix_successor};

use crate::catalog::schema::{IndexDef, TableDef};
use crate::codec::{decode_pk, encode_key_value};
use crate::error::{EngineError, Result};
use crate::ids::IndexId;
use crate::types::{Pk, Value};

/// The tag of a present value: below [`NULL_TAG`], so NULLs sort last ascending and
/// first descending, as in PostgreSQL.
pub(crate) const VALUE_TAG: u8 = 0x01;
const NULL_TAG: u8 = 0x02;

/// The most entries a read walks without a limit that stops it: past this, reading the
/// whole partition costs less than fetching each row by key.
pub const MAX_INDEX_ROWS: usize = 20_000;

/// The key prefix of one index's entries in one partition.
pub fn index_prefix(index: IndexId, user: Option<&UserId>) -> Vec<u8> {
    let mut k = KeyBuilder::with_capacity(32);
    k.raw(&index.0.to_be_bytes());
    if let Some(u) = user {
        k.text(u.as_str());
    }
    k.finish()
}

/// Appends one indexed value: tag and encoding, inverted for a descending column
/// (inverting a prefix-free code reverses its order and keeps it prefix-free).
pub fn push_value(out: &mut Vec<u8>, v: &Value, descending: bool) -> Result<()> {
    let start = out.len();
    if v.is_null() {
        out.push(NULL_TAG);
    } else {
        out.push(VALUE_TAG);
        let mut k = KeyBuilder::new();
        encode_key_value(&mut k, v)?;
        out.extend_from_slice(k.as_slice());
    }
    if descending {
        for b in &mut out[start..] {
            *b = !*b;
        }
    }
    Ok(())
}

/// The smallest key above every key that starts with `prefix`.
pub(crate) fn after_prefix(prefix: &[u8]) -> Vec<u8> {
    prefix_successor(prefix).unwrap_or_else(|| {
        let mut v = prefix.to_vec();
        v.push(0xFF);
        v
    })
}

/// One index's entry for a row: the key, the length of its value part (the index's
/// prefix and values, without the primary key), and whether any indexed value is NULL.
pub struct Entry {
    pub key: Vec<u8>,
    pub values_len: usize,
    pub has_null: bool,
}

pub fn entry(
    table: &TableDef,
    index: &IndexDef,
    user: Option<&UserId>,
    values: &[Value],
    pk_enc: &[u8],
) -> Result<Entry> {
    let mut key = index_prefix(index.id, user);
    let mut has_null = false;
    for (col, pos) in index.columns.iter().zip(table.index_columns(index)?) {
        let v = values.get(pos).unwrap_or(&Value::Null);
        has_null |= v.is_null();
        push_value(&mut key, v, col.descending)?;
    }
    let values_len = key.len();
    key.extend_from_slice(pk_enc);
    Ok(Entry {
        key,
        values_len,
        has_null,
    })
}

/// What a row change does to one index.
pub enum EntryWrite {
    Delete(Vec<u8>),
    /// A new entry of `table.indexes[index]`; `unique` asks for the check that no other
    /// key holds its values.
    Put {
        entry: Entry,
        index: usize,
        unique: bool,
    },
}

/// The entry changes of every index of `table` (building ones too) when a row goes
/// from `old` to `new` (either absent for an insert or a delete).
pub fn entry_writes(
    table: &TableDef,
    user: Option<&UserId>,
    pk_enc: &[u8],
    old: Option<&[Value]>,
    new: Option<&[Value]>,
) -> Result<Vec<EntryWrite>> {
    let mut out = vec![];
    for (pos, index) in table.indexes.iter().enumerate() {
        let old = old.map(|v| entry(table, index, user, v, pk_enc)).transpose()?;
        let new = new.map(|v| entry(table, index, user, v, pk_enc)).transpose()?;
        if let (Some(o), Some(n)) = (&old, &new)
            && o.key == n.key
        {
            continue;
        }
        if let Some(o) = old {
            out.push(EntryWrite::Delete(o.key));
        }
        if let Some(n) = new {
            let unique = index.unique && !n.has_null;
            out.push(EntryWrite::Put {
                entry: n,
                index: pos,
                unique,
            });
        }
    }
    Ok(out)
}

/// Entries written by a commit group not yet applied: present (`true`) or deleted.
pub type PendingEntries = BTreeMap<(u64, Vec<u8>), bool>;

/// For a unique entry: the encoded primary key of another row that holds the same
/// values, in the store or among `pending` (newest first), if any.
pub fn unique_conflict(
    store: &HotStore,
    uid: u64,
    entry: &Entry,
    pending: &[&PendingEntries],
) -> Result<Option<Vec<u8>>> {
    let values = &entry.key[..entry.values_len];
    let own = &entry.key[entry.values_len..];
    let upper = after_prefix(values);
    let state = |key: &[u8]| -> Option<bool> { pending.iter().find_map(|p| p.get(&(uid, key.to_vec())).copied()) };
    let mut it = store.scan(&Partition::index(uid), values, Some(&upper))?;
    while let Some((k, _)) = it.next_entry()? {
        let pk = &k[entry.values_len..];
        if pk != own && state(k) != Some(false) {
            return Ok(Some(pk.to_vec()));
        }
    }
    for p in pending {
        let from = (uid, values.to_vec());
        let to = (uid, upper.clone());
        for ((_, k), present) in p.range(from..to) {
            let pk = &k[entry.values_len..];
            if *present && pk != own && state(k) == Some(true) {
                return Ok(Some(pk.to_vec()));
            }
        }
    }
    Ok(None)
}

/// The error for a unique entry that another row holds.
pub fn duplicate(table: &TableDef, index: &IndexDef, values: &[Value]) -> EngineError {
    let cols = table.index_columns(index).unwrap_or_default();
    let schema = table.current();
    let names: Vec<&str> = cols.iter().map(|&i| schema.columns[i].name.as_str()).collect();
    let vals: Vec<String> = cols
        .iter()
        .map(|&i| match values.get(i) {
            Some(Value::Text(t)) => t.chars().take(64).collect(),
            Some(Value::Null) | None => "NULL".into(),
            Some(v) => v.to_string(),
        })
        .collect();
    EngineError::UniqueViolation(format!(
        "({})=({}) violates unique index '{}'",
        names.join(", "),
        vals.join(", "),
        index.name
    ))
}

/// Reads the primary key an entry points at.
pub fn entry_pk(table: &TableDef, value: &[u8]) -> Result<Pk> {
    decode_pk(table.current(), value)
        .ok_or_else(|| EngineError::Internal("an index entry with a bad primary key".into()))
}

/// A walk over entry ranges (sorted, disjoint) in index order or backwards, taken a
/// chunk of primary keys at a time, so that rows can be fetched between chunks.
pub struct Cursor<'a> {
    ranges: &'a [(Vec<u8>, Vec<u8>)],
    reverse: bool,
    /// Ranges finished.
    done: usize,
    /// The last key taken from the current range.
    last: Option<Vec<u8>>,
}

impl<'a> Cursor<'a> {
    pub fn new(ranges: &'a [(Vec<u8>, Vec<u8>)], reverse: bool) -> Self {
        Self {
            ranges,
            reverse,
            done: 0,
            last: None,
        }
    }

    /// How many entries the ranges hold (from the start, whatever was taken).
    pub fn count(&self, store: &HotStore, table: &TableDef) -> Result<usize> {
        let part = Partition::index(table.uid.0);
        let mut n = 0;
        for (lo, hi) in self.ranges {
            let mut it = store.scan(&part, lo, Some(hi))?;
            while it.next_entry()?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Up to `n` more primary keys; fewer only at the end.
    pub fn next_chunk(&mut self, store: &HotStore, table: &TableDef, n: usize) -> Result<Vec<Pk>> {
        let part = Partition::index(table.uid.0);
        let mut out = Vec::with_capacity(n.min(1024));
        while out.len() < n && self.done < self.ranges.len() {
            let i = if self.reverse {
                self.ranges.len() - 1 - self.done
            } else {
                self.done
            };
            let (lo, hi) = &self.ranges[i];
            let mut it = match (&self.last, self.reverse) {
                (Some(k), false) => {
                    let mut after = k.clone();
                    after.push(0);
                    store.scan(&part, &after, Some(hi))?
                }
                (Some(k), true) => store.scan_rev(&part, lo, k)?,
                (None, false) => store.scan(&part, lo, Some(hi))?,
                (None, true) => store.scan_rev(&part, lo, hi)?,
            };
            let mut full = false;
            while let Some((k, v)) = it.next_entry()? {
                out.push(entry_pk(table, v)?);
                if out.len() == n {
                    self.last = Some(k.to_vec());
                    full = true;
                    break;
                }
            }
            if !full {
                self.done += 1;
                self.last = None;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
