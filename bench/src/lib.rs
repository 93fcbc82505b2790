//! Benchmarks for shardcast: criterion micro-benchmarks live in `benches/`.
