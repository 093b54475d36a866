//! Benchmark of the historian worker (written with the worker).

fn main() {}
