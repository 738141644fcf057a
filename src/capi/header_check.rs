//! Compile-time proof that every function defined in this module's siblings has exactly the
//! signature `include/flashmha.h` declares: each bindgen-generated declaration and our
//! definition go into one array, which only type-checks if both are the same function-pointer
//! type. Struct layouts need no check of their own: the definitions use the generated types
//! (and bindgen's layout tests pin those to the header's C layout). The test also checks that
//! the declared symbol resolves to our definition.

use super::ffi;

macro_rules! same_signature {
    ($($name:ident),* $(,)?) => {
        // In every build with the feature, not only in tests.
        $(const _: () = {
            let _declared_and_defined = [ffi::$name, super::$name];
        };)*

        /// (name, declared symbol address, defined function address) of every entry point.
        #[cfg(test)]
        fn entry_points() -> Vec<(&'static str, usize, usize)> {
            vec![$({
                let pair = [ffi::$name, super::$name];
                (stringify!($name), pair[0] as usize, pair[1] as usize)
            }),*]
        }
    };
}

same_signature!(
    flashmha_version,
    flashmha_last_error_message,
    flashmha_plan_create,
    flashmha_plan_create_for_context,
    flashmha_plan_destroy,
    flashmha_context_create,
    flashmha_context_destroy,
    flashmha_run,
    flashmha_forward,
    flashmha_emulate_run,
    flashmha_emulate_forward,
);

#[cfg(test)]
mod tests {
    #[test]
    fn every_declared_function_is_our_definition() {
        let header = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/include/flashmha.h"));
        let entries = super::entry_points();
        for (name, declared, defined) in &entries {
            assert_eq!(declared, defined, "{name}: the header's symbol is not ours");
            assert!(header.contains(&format!(" {name}(")) || header.contains(&format!("*{name}(")));
        }
        // Every function the header declares (an identifier `flashmha_*` followed by `(`) is
        // in the list above.
        let mut declared_in_header: Vec<&str> = header
            .match_indices("flashmha_")
            .map(|(at, _)| {
                let rest = &header[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], rest[end..].starts_with('('))
            })
            .filter(|&(_, is_call)| is_call)
            .map(|(name, _)| name)
            .collect();
        declared_in_header.sort_unstable();
        declared_in_header.dedup();
        let mut listed: Vec<&str> = entries.iter().map(|e| e.0).collect();
        listed.sort_unstable();
        assert_eq!(declared_in_header, listed);
    }
}
