//! Reads: typed filters and sort keys (`filter`) with their text patterns (`pattern`:
//! LIKE and regular expressions), the typed select and aggregate API
//! (`select`), partition readers over the hot store (`reader`), DataFusion table
//! providers over both tiers (`provider`), rows merged across tiers (`tiered`), the
//! row cache (`row_cache`), and rows to and from Arrow (`arrow_convert`).

pub mod aggregate_rows;
pub mod arrow_convert;
pub mod filter;
pub mod pattern;
pub mod provider;
pub mod reader;
pub mod row_cache;
pub mod select;
pub mod tiered;
