//! Fuzz the front end: no input may make parsing, checking or formatting panic or
//! hang, and whatever formats must format to a fixed point that parses cleanly;
//! every diagnostic renders for people, plain and fancy.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    // The filter rule reader and pest read every input alike.
    let (fast, pest) = (
        lbp_lang::parse::parse(src),
        lbp_lang::parse::parse_with_pest_only(src),
    );
    assert_eq!(
        fast.policy, pest.policy,
        "the filter rule reader and pest disagree"
    );
    assert_eq!(
        fast.diagnostics, pest.diagnostics,
        "the filter rule reader and pest disagree"
    );
    let analysis = lbp_lang::analyze(src);
    for d in &analysis.diagnostics {
        let span = d.span();
        assert!(
            span.start <= span.end && span.end <= src.len(),
            "span out of the source: {span:?}"
        );
        assert!(
            src.is_char_boundary(span.start) && src.is_char_boundary(span.end),
            "span splits a character"
        );
        let _ = lbp_lang::diag::line_col(src, span.start);
    }
    let source = lbp::render::Source::new(std::path::Path::new("fuzz.lbp"), src);
    for fancy in [false, true] {
        let renderer = lbp::render::Renderer::new(fancy);
        let mut out = String::new();
        for d in &analysis.diagnostics {
            renderer.render(&source, d, &mut out);
        }
    }
    if let Ok(formatted) = lbp_lang::fmt::format_source(src) {
        let again = lbp_lang::fmt::format_source(&formatted).expect("formatted output parses");
        assert_eq!(again, formatted, "formatting is not idempotent");
    }
});
