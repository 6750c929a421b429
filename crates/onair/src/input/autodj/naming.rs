//! Track names for the air: "Artist - Title" from tags, or from the file name when the tags
//! say nothing ("Artist_-_Title.mp3" → "Artist - Title"). Pure.

/// Artist and title read from a file name (`stem`: without directory and extension).
/// Underscores are spaces; the first " - " separates artist from title.
pub fn parse_file_name(stem: &str) -> (Option<String>, String) {
    let spaced = stem.replace('_', " ");
    let clean = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    match spaced.split_once(" - ") {
        Some((a, t)) if !clean(a).is_empty() && !clean(t).is_empty() => (Some(clean(a)), clean(t)),
        _ => (None, clean(&spaced)),
    }
}

/// What listeners see: "Artist - Title", or the title alone.
pub fn display_title(artist: Option<&str>, title: &str) -> String {
    match artist.map(str::trim).filter(|a| !a.is_empty()) {
        Some(a) => format!("{a} - {title}"),
        None => title.to_string(),
    }
}

/// The artist as compared by the rotation ("The Beatles" and "the beatles " are one).
pub fn artist_key(artist: Option<&str>) -> String {
    artist.map_or_else(String::new, |a| {
        a.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    })
}

/// A ReplayGain value as tags write it ("-6.54 dB", "+1.2", "-3,5 dB") in dB.
pub fn parse_replaygain(s: &str) -> Option<f64> {
    let t = s.trim();
    let t = t
        .strip_suffix("dB")
        .or_else(|| t.strip_suffix("db"))
        .or_else(|| t.strip_suffix("DB"))
        .unwrap_or(t)
        .trim()
        .replace(',', ".");
    let v: f64 = t.parse().ok()?;
    (v.is_finite() && v.abs() <= 60.0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_become_titles() {
        assert_eq!(
            parse_file_name("Artist_-_Title"),
            (Some("Artist".into()), "Title".into())
        );
        assert_eq!(
            parse_file_name("The Band - Song - Live"),
            (Some("The Band".into()), "Song - Live".into())
        );
        assert_eq!(parse_file_name("just_a_song"), (None, "just a song".into()));
        assert_eq!(parse_file_name(" - Title"), (None, "- Title".into()));
        assert_eq!(
            parse_file_name("Ärtist_-_Tïtle"),
            (Some("Ärtist".into()), "Tïtle".into())
        );
        assert_eq!(display_title(Some("A"), "T"), "A - T");
        assert_eq!(display_title(Some(" "), "T"), "T");
        assert_eq!(display_title(None, "T"), "T");
        assert_eq!(
            artist_key(Some(" The  Beatles ")),
            artist_key(Some("the beatles"))
        );
    }

    #[test]
    fn replaygain_values_parse() {
        assert_eq!(parse_replaygain("-6.54 dB"), Some(-6.54));
        assert_eq!(parse_replaygain("+1.2"), Some(1.2));
        assert_eq!(parse_replaygain("-3,5 dB"), Some(-3.5));
        assert_eq!(parse_replaygain("loud"), None);
        assert_eq!(parse_replaygain("NaN"), None);
        assert_eq!(parse_replaygain("-1000 dB"), None);
    }
}
