pub fn check(_p: &crate::ast::Policy) -> Vec<crate::Diagnostic> { Vec::new() }
