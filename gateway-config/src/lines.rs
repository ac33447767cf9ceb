//! Where each key of a TOML document is: key paths (`rules[2].redirect.status`) to lines,
//! and byte offsets (of a serde error) back to the key path they fall in.

use std::{collections::BTreeMap, ops::Range};

use toml::{
    de::{DeTable, DeValue},
    Spanned,
};

/// The key paths of one document with their byte ranges.
#[derive(Debug, Default)]
pub struct LineIndex {
    /// Byte offset at which each line starts.
    line_starts: Vec<usize>,
    /// Key path → the line where it is written (its key, or an array element's start).
    lines: BTreeMap<String, usize>,
    /// Every key and value range with its path; the smallest range holding an offset names
    /// the key an error at that offset is about.
    ranges: Vec<(Range<usize>, String)>,
}

impl LineIndex {
    pub fn new(text: &str, root: &DeTable<'_>) -> Self {
        let mut index = Self {
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            ..Self::default()
        };
        index.table("", root);
        index
    }

    /// 1-based line of byte `offset`.
    pub fn line_of_offset(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// 1-based column of byte `offset`.
    pub fn column_of_offset(&self, offset: usize) -> usize {
        let line = self.line_of_offset(offset);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        offset - start + 1
    }

    /// The line of `key`, or of the closest enclosing key that is written in the file (a
    /// missing key is reported at the object that lacks it).
    pub fn line_of_key(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some(&line) = self.lines.get(key) {
                return Some(line);
            }
            let cut = key.rfind(['.', '['])?;
            key = &key[..cut];
        }
    }

    /// The innermost key path whose key or value holds byte `offset`.
    pub fn key_at(&self, offset: usize) -> Option<&str> {
        self.ranges
            .iter()
            .filter(|(range, _)| range.contains(&offset))
            .min_by_key(|(range, _)| range.len())
            .map(|(_, path)| path.as_str())
    }

    fn record(&mut self, path: &str, range: Range<usize>) {
        let line = self.line_of_offset(range.start);
        self.lines.entry(path.to_owned()).or_insert(line);
        self.ranges.push((range, path.to_owned()));
    }

    fn table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.record(&path, key.span());
            self.value(&path, value);
        }
    }

    fn value(&mut self, path: &str, value: &Spanned<DeValue<'_>>) {
        let span = value.span();
        if !span.is_empty() {
            self.ranges.push((span, path.to_owned()));
        }
        match value.get_ref() {
            DeValue::Table(table) => self.table(path, table),
            DeValue::Array(array) => {
                for (i, item) in array.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    self.record(&item_path, item.span());
                    self.value(&item_path, item);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keys_to_lines_and_offsets_to_keys() {
        let text = "[global]\nadmin = \"x\"\n\n[[listeners]]\nname = \"a\"\n\n[[listeners]]\nname = \"b\"\nbind = \"c\"\n";
        let root = DeTable::parse(text).expect("valid TOML");
        let index = LineIndex::new(text, root.get_ref());
        assert_eq!(index.line_of_key("global.admin"), Some(2));
        assert_eq!(index.line_of_key("listeners[1]"), Some(7));
        assert_eq!(index.line_of_key("listeners[1].bind"), Some(9));
        // Not written: the object that lacks it.
        assert_eq!(index.line_of_key("listeners[0].bind"), Some(4));
        let offset = text.find("\"c\"").expect("value in the text");
        assert_eq!(index.key_at(offset), Some("listeners[1].bind"));
        assert_eq!(index.line_of_offset(0), 1);
        assert_eq!(index.column_of_offset(offset), 8);
    }
}
