//! Direction files: control-vector GGUF, `.npy` and safetensors round trips, bit-exact, and a
//! control vector written by gguf-py the way repeng's `export_gguf` writes one.

use std::collections::BTreeMap;
use std::path::Path;

use lvh::geometry::export::{
    npy_bytes, read_npy, read_safetensors_vectors, safetensors_bytes, ControlVector,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/repeng_controlvector.gguf")
}

/// The values `make_repeng_controlvector.py` writes.
fn repeng_expected() -> ControlVector {
    let layers = [1usize, 2, 5]
        .iter()
        .map(|&l| {
            let v = (0..7)
                .map(|j| (l * 10 + j) as f32 / 8.0 - 1.0)
                .collect::<Vec<f32>>();
            (l, v)
        })
        .collect();
    ControlVector {
        model_hint: "llama".into(),
        layers,
    }
}

fn random_vector(rng: &mut ChaCha8Rng, d: usize) -> Vec<f32> {
    (0..d)
        .map(|i| match i % 5 {
            // Odd bit patterns too: a subnormal, a negative zero, large magnitudes.
            0 => f32::from_bits(rng.gen_range(1..0x0080_0000)),
            1 => -0.0,
            _ => rng.gen_range(-1e6f32..1e6),
        })
        .collect()
}

#[test]
fn control_vector_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for d in [1usize, 7, 8, 33, 576] {
        let layers: BTreeMap<usize, Vec<f32>> = [1usize, 2, 9, 29]
            .iter()
            .map(|&l| (l, random_vector(&mut rng, d)))
            .collect();
        let cv = ControlVector {
            model_hint: "llama".into(),
            layers,
        };
        let p = dir.path().join(format!("cv{d}.gguf"));
        cv.write(&p).unwrap();
        let back = ControlVector::read(&p).unwrap();
        assert_eq!(back.model_hint, cv.model_hint);
        assert_eq!(back.layers.len(), cv.layers.len());
        for (l, v) in &cv.layers {
            let w = &back.layers[l];
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(v), bits(w), "d={d} layer {l}");
        }
    }
}

#[test]
fn reads_a_repeng_export_and_writes_the_same_bytes() {
    let path = fixture();
    let cv = ControlVector::read(&path).unwrap();
    assert_eq!(cv, repeng_expected());
    // Our writer lays the file out exactly as gguf-py does (same keys, order and alignment).
    let ours = repeng_expected().to_gguf_bytes().unwrap();
    assert_eq!(ours, std::fs::read(&path).unwrap());
}

#[test]
fn control_vector_errors_are_clear() {
    let zero = ControlVector {
        model_hint: "llama".into(),
        layers: [(0usize, vec![1.0f32; 4])].into(),
    };
    assert!(format!("{:#}", zero.to_gguf_bytes().unwrap_err()).contains("layer 0"));
    let ragged = ControlVector {
        model_hint: "llama".into(),
        layers: [(1usize, vec![1.0f32; 4]), (2, vec![1.0; 5])].into(),
    };
    assert!(ragged.to_gguf_bytes().is_err());
    let nan = ControlVector {
        model_hint: String::new(),
        layers: [(3usize, vec![f32::NAN])].into(),
    };
    assert!(nan.to_gguf_bytes().is_err());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.gguf");
    std::fs::write(&p, b"not a gguf file at all").unwrap();
    let e = format!("{:#}", ControlVector::read(&p).unwrap_err());
    assert!(e.contains("junk.gguf"), "{e}");
}

#[test]
fn npy_round_trip_is_bit_exact_and_header_aligned() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for shape in [vec![5usize], vec![3, 4], vec![1, 576]] {
        let n: usize = shape.iter().product();
        let data = random_vector(&mut rng, n);
        let bytes = npy_bytes(&shape, &data).unwrap();
        let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let (s, back) = read_npy(&bytes, Path::new("x.npy")).unwrap();
        assert_eq!(s, shape);
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            data.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
    assert!(npy_bytes(&[4], &[1.0; 3]).is_err());
    let mut bad = npy_bytes(&[2], &[1.0, 2.0]).unwrap();
    bad.truncate(bad.len() - 1);
    assert!(read_npy(&bad, Path::new("bad.npy")).is_err());
}

#[test]
fn safetensors_round_trip_is_bit_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let vectors: Vec<(String, Vec<f32>)> = (0..4)
        .map(|l| {
            (
                format!("diff-of-means/blocks.{l}.hook_resid_post"),
                random_vector(&mut rng, 33),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.safetensors");
    std::fs::write(&p, safetensors_bytes(&vectors, None).unwrap()).unwrap();
    let back = read_safetensors_vectors(&p).unwrap();
    assert_eq!(back.len(), vectors.len());
    for (name, v) in &vectors {
        assert_eq!(
            back[name].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn reads_a_cvector_generator_export() {
    // Written by llama.cpp's own gguf writer as `cvector-generator` calls it
    // (scripts/make_cvector_generator_fixture.py): `controlvector.layer_count` is an i32 there,
    // every layer 1..n_layers−1 is present, and 24-byte tensors are padded to 32.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cvector_generator_controlvector.gguf");
    let cv = ControlVector::read(&path).unwrap();
    assert_eq!(cv.model_hint, "llama");
    let expected: BTreeMap<usize, Vec<f32>> = (1..4usize)
        .map(|l| (l, (0..6).map(|j| (l * 10 + j) as f32 / 4.0 - 3.0).collect()))
        .collect();
    assert_eq!(cv.layers, expected);
    // Written back by lvh, it reads the same (lvh writes the count as u32, as repeng does).
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("again.gguf");
    cv.write(&p).unwrap();
    assert_eq!(ControlVector::read(&p).unwrap(), cv);
}
