//! Damaged backups, as an operator meets them after a disaster. For every
//! file of a small chain (a full backup and two incrementals: streams and
//! manifests), byte flips, truncations, zeroed blocks and appended garbage.
//! Each mutant that changes what a file says must make `verify --read-data`
//! report a problem, and a restore without `--id` must never succeed with an
//! older point than the newest backup in the target (nor with other data
//! than that point's). No run may panic.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use qg_backup::restore::{restore, RestoreOptions};
use qg_backup::verify::{verify, VerifyOptions};
use qg_backup::Error;
use qg_store::progress::NoProgress;

/// A chain of three backups with hooks, a branch and a tag, and the state of
/// its newest point. Returns (fixture, target dir, ids oldest first, newest state).
fn chain() -> (Fx, PathBuf, Vec<String>, State) {
    let fx = Fx::new();
    let hooks = fx.data.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(hooks.join("post-commit"), "#!/bin/sh\nexit 0\n").unwrap();
    fx.commit("default", None, &quads("a", 60), "");
    let target = fx.target("backups");
    let full = full_to(&fx, &target, None);
    fx.commit("default", None, &quads("b", 20), &quads("a", 5));
    fx.branch("default", "feature");
    let inc1 = inc_to(&fx, &target, None);
    fx.commit("default", Some("feature"), &quads("c", 10), "");
    fx.tag("default", "v1");
    let inc2 = inc_to(&fx, &target, None);
    let newest = state(&fx.store);
    (fx, target.into(), vec![full.id, inc1.id, inc2.id], newest)
}

/// The ways a file is damaged: flips at spread-out positions (and every byte
/// of the first 16 and last 48, where the prelude and footer are),
/// truncations, zeroed blocks, appended bytes.
fn mutants(good: &[u8]) -> Vec<(String, Vec<u8>)> {
    let n = good.len();
    let mut positions: Vec<usize> = (0..n.min(16)).chain(n.saturating_sub(48)..n).collect();
    let spread = 96;
    positions.extend((0..spread).map(|i| (i * n / spread + i * 7) % n));
    positions.sort_unstable();
    positions.dedup();
    let mut out = Vec::new();
    for (k, &p) in positions.iter().enumerate() {
        let mask = [0x01u8, 0x80, 0xff, 0x20][k % 4];
        let mut b = good.to_vec();
        b[p] ^= mask;
        out.push((format!("byte {p} ^ {mask:#04x}"), b));
    }
    for len in [0, 1, 9, n / 4, n / 2, n - 41, n - 40, n - 1] {
        out.push((format!("truncated to {len} bytes"), good[..len].to_vec()));
    }
    for at in [0, n / 5, n / 3, n / 2, 2 * n / 3, n.saturating_sub(64)] {
        let mut b = good.to_vec();
        let end = (at + 64).min(n);
        b[at..end].fill(0);
        if b != good {
            out.push((format!("zeroed {at}..{end}"), b));
        }
    }
    let mut b = good.to_vec();
    b.extend_from_slice(b"\ngarbage\n");
    out.push(("appended garbage".into(), b));
    out
}

/// Whether a mutant of a manifest still says the same: JSON whose value is
/// unchanged (only whitespace differs) is not damage.
fn same_json(good: &[u8], bad: &[u8]) -> bool {
    match (
        serde_json::from_slice::<serde_json::Value>(good),
        serde_json::from_slice::<serde_json::Value>(bad),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn verify_finds_damage(target: &Path) -> Result<(), String> {
    match verify(
        &VerifyOptions {
            from: target.display().to_string(),
            read_data: true,
            ..Default::default()
        },
        &NoProgress,
    ) {
        Ok(r) if r.is_clean() => Err("verify --read-data reported no problem".into()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == qg_store::ErrorKind::Failed => Ok(()),
        Err(e) => Err(format!("verify --read-data failed as bad usage: {e}")),
    }
}

#[test]
fn every_damaged_file_of_a_chain_is_found_and_never_restores_an_older_point() {
    let (fx, target, ids, newest) = chain();
    let from = target.display().to_string();
    let inc1 = &ids[1];
    let mut files = files(&target);
    files.retain(|f| f.ends_with(".qgb") || f.ends_with(".manifest.json"));
    assert_eq!(files.len(), 6, "{files:?}");
    let (mut tried, mut skipped, mut runs) = (0, 0, 0);
    for file in &files {
        let path = target.join(file);
        let good = std::fs::read(&path).unwrap();
        let is_manifest = file.ends_with(".json");
        let of_newest = file.starts_with(ids[2].as_str());
        for (what, bad) in mutants(&good) {
            if is_manifest && same_json(&good, &bad) {
                skipped += 1;
                continue;
            }
            tried += 1;
            std::fs::write(&path, &bad).unwrap();
            let case = format!("{file}, {what}");

            if let Err(e) = verify_finds_damage(&target) {
                panic!("{case}: {e}");
            }
            runs += 1;
            let to = fx.path(&format!("restored-{runs}"));
            match restore(
                &RestoreOptions {
                    from: from.clone(),
                    to: to.clone(),
                    ..Default::default()
                },
                &NoProgress,
            ) {
                Ok(r) => {
                    assert_eq!(&r.id, &ids[2], "{case}: restore chose an older point");
                    assert_same(&newest, &state(&open(&to)), &case);
                }
                Err(e) => {
                    assert_eq!(e.kind(), qg_store::ErrorKind::Failed, "{case}: {e}");
                    assert!(!to.exists(), "{case}: a failed restore left {to:?}");
                    // damage to the newest backup names the exact point to restore instead
                    if of_newest {
                        match &e {
                            Error::NewestDamaged { intact, .. } => assert_eq!(
                                intact.as_ref().map(|(id, _)| id),
                                Some(inc1),
                                "{case}: {e}"
                            ),
                            _ => panic!("{case}: not reported as a damaged newest backup: {e}"),
                        }
                        assert!(e.to_string().contains(&format!("--id {inc1}")), "{e}");
                    }
                }
            }
            std::fs::write(&path, &good).unwrap();
        }
    }
    // the mutants were real: most of them changed what a file says
    assert!(
        tried > 6 * 100,
        "only {tried} mutants tried ({skipped} skipped)"
    );
    assert!(skipped * 10 < tried, "{skipped} of {tried} mutants skipped");
    // and the untouched chain still verifies and restores to its newest point
    assert!(verify_data(&from).is_clean());
    let r = restore(
        &RestoreOptions {
            from,
            to: fx.path("restored-clean"),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert_eq!(r.id, ids[2]);
}

/// Edit the newest manifest as JSON and write it back.
fn edit_manifest(target: &Path, id: &str, f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let path = target.join(format!("{id}.manifest.json"));
    let good = std::fs::read(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    f(&mut v);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    good
}

fn problems(target: &Path) -> String {
    let r = verify(
        &VerifyOptions {
            from: target.display().to_string(),
            read_data: true,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    r.problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_manifest_field_is_checked_and_named() {
    let (fx, target, ids, _) = chain();
    let id = ids[2].as_str();
    let path = target.join(format!("{id}.manifest.json"));
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // a changed value of each field the stream confirms: verify names it
    let mut fields: Vec<String> = Vec::new();
    for (k, v) in original.as_object().unwrap() {
        match v {
            serde_json::Value::Object(o) => fields.extend(o.keys().map(|c| format!("{k}.{c}"))),
            _ => fields.push(k.clone()),
        }
    }
    let changed = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => (n.as_u64().unwrap() + 1).into(),
        serde_json::Value::String(s)
            if s.len() > 30 && s.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            let flipped = if s.starts_with('0') { "1" } else { "0" };
            format!("{flipped}{}", &s[1..]).into()
        }
        serde_json::Value::String(s) => format!("{s}x").into(),
        serde_json::Value::Null => "x".into(),
        _ => unreachable!("manifest fields are numbers, strings, null or objects"),
    };
    for field in &fields {
        let good = edit_manifest(&target, id, |v| {
            let slot = match field.split_once('.') {
                Some((a, b)) => &mut v[a][b],
                None => &mut v[field.as_str()],
            };
            *slot = changed(slot);
        });
        let found = problems(&target);
        let leaf = field.rsplit('.').next().unwrap();
        assert!(
            found.contains(&format!("`{field}`")) || found.contains(leaf),
            "changing `{field}` is not reported by its name:\n{found}"
        );
        let err = restore(
            &RestoreOptions {
                from: target.display().to_string(),
                to: fx.path("restored"),
                ..Default::default()
            },
            &NoProgress,
        )
        .map(|r| r.id)
        .expect_err(&format!("restore accepted a changed `{field}`"));
        assert!(
            matches!(err, Error::NewestDamaged { .. }),
            "`{field}`: {err}"
        );
        std::fs::write(&path, good).unwrap();
    }
    assert!(fields.iter().any(|f| f == "hooks_sha256"), "{fields:?}");

    // unknown keys, renamed keys, missing keys
    for (what, edit) in [
        (
            "unknown field `comment`",
            Box::new(|v: &mut serde_json::Value| v["comment"] = "added".into())
                as Box<dyn Fn(&mut serde_json::Value)>,
        ),
        (
            "unknown field `tools`",
            Box::new(|v: &mut serde_json::Value| {
                let t = v.as_object_mut().unwrap().remove("tool").unwrap();
                v["tools"] = t;
            }),
        ),
        (
            "missing field `counts.objects`",
            Box::new(|v: &mut serde_json::Value| {
                v["counts"].as_object_mut().unwrap().remove("objects");
            }),
        ),
        (
            "unknown field `counts.extra`",
            Box::new(|v: &mut serde_json::Value| v["counts"]["extra"] = 1.into()),
        ),
    ] {
        let good = edit_manifest(&target, id, edit);
        let found = problems(&target);
        assert!(found.contains(what), "{what}: {found}");
        std::fs::write(&path, good).unwrap();
    }
    assert!(problems(&target).is_empty());
}
