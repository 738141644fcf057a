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
    flashmha_bwd_plan_create,
    flashmha_bwd_plan_create_for_context,
    flashmha_bwd_plan_workspace_len,
    flashmha_bwd_plan_destroy,
    flashmha_bwd_run,
    flashmha_emulate_bwd_run,
    flashmha_status_string,
    flashmha_decode_plan_create,
    flashmha_decode_plan_create_for_context,
    flashmha_decode_plan_info,
    flashmha_decode_plan_destroy,
    flashmha_decode_run,
    flashmha_emulate_decode_run,
    flashmha_mla_decode_plan_create,
    flashmha_mla_decode_plan_create_for_context,
    flashmha_mla_decode_plan_info,
    flashmha_mla_decode_plan_destroy,
    flashmha_mla_decode_run,
    flashmha_emulate_mla_decode_run,
    flashmha_merge_plan_create,
    flashmha_merge_plan_create_for_context,
    flashmha_merge_plan_destroy,
    flashmha_merge_run,
    flashmha_emulate_merge_run,
    flashmha_kv_append_plan_create,
    flashmha_kv_append_plan_create_for_context,
    flashmha_kv_append_plan_destroy,
    flashmha_kv_append_run,
    flashmha_emulate_kv_append_run,
    flashmha_head_similarity,
    flashmha_emulate_head_similarity,
);

#[cfg(test)]
mod tests {
    #[test]
    fn the_header_version_is_the_crate_version() {
        let number = |s: &str| s.parse::<u32>().unwrap();
        assert_eq!(
            super::ffi::FLASHMHA_VERSION_MAJOR,
            number(env!("CARGO_PKG_VERSION_MAJOR"))
        );
        assert_eq!(
            super::ffi::FLASHMHA_VERSION_MINOR,
            number(env!("CARGO_PKG_VERSION_MINOR"))
        );
        assert_eq!(
            super::ffi::FLASHMHA_VERSION_PATCH,
            number(env!("CARGO_PKG_VERSION_PATCH"))
        );
        let string = std::ffi::CStr::from_bytes_with_nul(super::ffi::FLASHMHA_VERSION_STRING)
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(string, env!("CARGO_PKG_VERSION"));
        // SAFETY: a static NUL-terminated string.
        let library = unsafe { std::ffi::CStr::from_ptr(super::super::flashmha_version()) };
        assert_eq!(library.to_str().unwrap(), string);
    }

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
