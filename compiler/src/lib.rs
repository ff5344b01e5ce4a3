//! The lbp compiler: lowers a checked policy (from `lbp-lang`) to an IR and from
//! there to native filter functions (Cranelift) or the reference interpreter.
//!
//! Not built yet: this crate holds its place in the workspace. It will never read
//! files, the clock or the network; it turns an AST into code and tables.
