//! How deeply a `msg` nests, measured on its raw text without decoding it (rule 2.7).
//!
//! A relay forwards `msg` without decoding it, so without this check anyone who knows an
//! address could make the receiver's JSON decoder fail (serde_json stops at 128 levels,
//! Python's at about 1,000) or overflow a recursive decoder's stack. The measure is a loop,
//! never a recursion, so a hostile input cannot overflow this side's stack either.

/// Whether `text`, one well-formed JSON value, nests deeper than `max` levels: every object
/// and every array is one level, so `{}` is at level 1 and `{"a":[{}]}` reaches level 3.
///
/// Cheap for the messages a relay carries. A value with fewer than `max + 1` opening
/// brackets cannot reach level `max + 1`, and counting bytes (one vectorised pass, brackets
/// inside strings included) says so without following strings or escapes. Only a text
/// with more brackets than `max` gets the exact walk.
pub(crate) fn deeper_than(text: &str, max: usize) -> bool {
    let bytes = text.as_bytes();
    // Level max+1 needs max+1 opening and as many closing brackets.
    if bytes.len() < 2 * (max + 1) {
        return false;
    }
    if memchr::memchr2_iter(b'{', b'[', bytes).nth(max).is_none() {
        return false;
    }
    exact_depth_exceeds(bytes, max)
}

/// The exact walk: brackets outside strings only.
fn exact_depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                // Skip to the closing quote; a backslash escapes the byte after it.
                i += 1;
                while let Some(at) = memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                    i += at;
                    if bytes[i] == b'"' {
                        break;
                    }
                    i += 2;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        // Alternate objects and arrays, with strings full of brackets on the way.
        let mut open = String::new();
        let mut close = String::new();
        for level in 0..levels {
            if level % 2 == 0 {
                open.push_str(r#"{"k\"[{":"}}]]","v":"#);
                close.insert(0, '}');
            } else {
                open.push_str("[1,");
                close.insert(0, ']');
            }
        }
        // The innermost value closes the last opened level's member or element.
        format!("{open}0{close}")
    }

    #[test]
    fn counts_objects_and_arrays_but_not_brackets_in_strings() {
        for levels in [1, 2, 3, 99, 100, 101, 102, 500] {
            let text = nested(levels);
            serde_json::from_str::<serde::de::IgnoredAny>(&text)
                .map(|_| ())
                .or_else(|e| if levels > 127 { Ok(()) } else { Err(e) })
                .unwrap_or_else(|e| panic!("{levels}: not JSON: {e}\n{text}"));
            assert_eq!(deeper_than(&text, 100), levels > 100, "{levels} levels");
        }
    }

    #[test]
    fn escapes_do_not_end_strings_early() {
        // `"\\"` ends right after the escaped backslash, so the brackets after it count.
        let text = format!(r#"{{"a":"\\","b":{}{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(deeper_than(&text, 100), "1 + 100 levels");
        // `"\""` does not end at the escaped quote: these brackets are inside the string.
        let text = format!(r#"{{"a":"\"{}","b":1}}"#, "[".repeat(300));
        assert!(!deeper_than(&text, 100));
    }

    #[test]
    fn a_hundred_thousand_levels_are_measured_without_recursion() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(deeper_than(&deep, 100));
        assert!(deeper_than(&deep, 99_999));
        assert!(!deeper_than(&deep, 100_000));
    }
}
