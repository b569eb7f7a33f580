"""Annotation and split-file parsers on small strings in each dataset's real format and quirks."""
import numpy as np
import pytest

from musicpetl.data import parsers as P
from musicpetl.tasks.key import KEY_NAMES


# ---------------------------------------------------------------------------------- key names

@pytest.mark.parametrize("text,name", [
    ("C major", "C major"), ("D# minor", "D# minor"), ("Eb minor", "D# minor"), ("Eb major", "D# major"),
    ("Gb minor", "F# minor"), ("Db major", "C# major"), ("Bb minor", "A# minor"), ("B minor", "B minor"),
    ("d# minor", "D# minor"),           # lower case, as in giantsteps-mtg-key's per-track .key files
    ("C# major ", "C# major"),          # trailing space (annotations.txt)
    ("  A  minor\n", "A minor"),
    ("Cb major", "B major"), ("E# minor", "F minor"), ("B# major", "C major"),  # wrap around
    ("F♯ minor", "F# minor"), ("A♭ major", "G# major"),
])
def test_key_names(text, name):
    label, reason = P.parse_key_name(text)
    assert reason is None and KEY_NAMES[label] == name


@pytest.mark.parametrize("text,why", [
    ("-", "no key annotated"), ("", "empty"),
    ("F minor / G# major", "ambiguous"), ("F / F# minor", "ambiguous"), ("F major / D minor / C minor", "ambiguous"),
])
def test_key_names_without_a_single_key(text, why):
    label, reason = P.parse_key_name(text)
    assert label is None and why in reason


@pytest.mark.parametrize("text", ["H major", "C dorian", "C", "major", "12"])
def test_key_names_unknown_format_raises(text):
    with pytest.raises(ValueError, match="key"):
        P.parse_key_name(text)


def test_every_key_name_round_trips():
    for label, name in enumerate(KEY_NAMES):
        assert P.parse_key_name(name) == (label, None)


# ---------------------------------------------------------------------------------- GTZAN key

def test_gtzan_key_integers_are_a_based():
    # KeyEnumeration.txt: major A=0 .. G#=11, minor a=12 .. g#=23
    assert KEY_NAMES[P.gtzan_key_label("0")[0]] == "A major"
    assert KEY_NAMES[P.gtzan_key_label("3")[0]] == "C major"
    assert KEY_NAMES[P.gtzan_key_label("11")[0]] == "G# major"
    assert KEY_NAMES[P.gtzan_key_label("12")[0]] == "A minor"
    assert KEY_NAMES[P.gtzan_key_label("15")[0]] == "C minor"
    assert KEY_NAMES[P.gtzan_key_label("23")[0]] == "G# minor"
    for n in range(24):
        label, _ = P.gtzan_key_label(str(n))
        assert label % 12 == (n % 12 + 9) % 12 and label // 12 == n // 12


def test_gtzan_key_quirks():
    assert P.gtzan_key_label("17 ") == (14, None)        # blues.00034: trailing space; d minor
    assert P.gtzan_key_label("22") == (P.gtzan_key_label("22\n")[0], None)
    label, reason = P.gtzan_key_label("-1")
    assert label is None and "unknown" in reason
    for bad in ("24", "-2", "x", ""):
        with pytest.raises(ValueError):
            P.gtzan_key_label(bad)


def test_gtzan_key_file_names():
    assert P.gtzan_key_stem("blues.00034.lerch.txt") == "blues.00034"
    assert P.gtzan_key_stem("genres/disco/disco.00055.pk") is None   # the stray binary
    assert P.gtzan_key_stem("KeyEnumeration.txt") is None


# ---------------------------------------------------------------------------------- tempo

def test_bpm_files():
    assert P.parse_bpm("1.258700000000000045e+02\n") == pytest.approx(125.87)   # gtzan_tempo_beat
    assert P.parse_bpm("3.216399999999999864e+02\n") == pytest.approx(321.64)   # jazz.00031 (> 300 bins)
    assert P.parse_bpm("141.68") == pytest.approx(141.68)                       # GiantSteps, no newline
    assert P.parse_bpm("0.0\n") == 0.0                                          # annotations_v2 gaps
    for bad in ("", "120 121", "abc", "-5", "nan"):
        with pytest.raises(ValueError):
            P.parse_bpm(bad)


def test_gtzan_tempo_file_names():
    assert P.gtzan_tempo_stem("tempo/gtzan_reggae_00085.bpm") == "reggae.00085"
    assert P.gtzan_tempo_filename("hiphop.00001") == "gtzan_hiphop_00001.bpm"
    with pytest.raises(ValueError):
        P.gtzan_tempo_stem("reggae.00085.bpm")


# ---------------------------------------------------------------------------------- GTZAN lists

def test_gtzan_filtered_list(tmp_path):
    f = tmp_path / "train_filtered.txt"
    f.write_text("blues/blues.00029.wav\nblues/blues.00030.wav\n\nrock/rock.00090.au")  # no final newline
    assert P.read_gtzan_list(f) == [("blues", "blues.00029"), ("blues", "blues.00030"), ("rock", "rock.00090")]
    assert P.parse_gtzan_list_line("  \n") is None
    for bad in ("blues/rock.00001.wav", "blues.00001.wav", "blues/blues.1.wav"):
        with pytest.raises(ValueError):
            P.parse_gtzan_list_line(bad)


# ---------------------------------------------------------------------------------- MTAT

def test_mtat_split_entries(tmp_path):
    assert P.parse_mtat_split_entry("12\tf/american_bach_soloists-j_s__bach-01-bwv54__i_aria-30-59.mp3") == \
        (12, "f/american_bach_soloists-j_s__bach-01-bwv54__i_aria-30-59.mp3")
    for bad in ("f/a.mp3", "x\tf/a.mp3", "3\ta.mp3"):
        with pytest.raises(ValueError):
            P.parse_mtat_split_entry(bad)
    np.save(tmp_path / "valid.npy", np.array(["0\t0/a-1-0-29.mp3", "7\tc/b-2-30-59.mp3"]))
    assert P.read_mtat_split(tmp_path / "valid.npy") == [(0, "0/a-1-0-29.mp3"), (7, "c/b-2-30-59.mp3")]
    np.save(tmp_path / "tags.npy", np.array(["guitar", "classical", "no vocals"]))
    assert P.read_mtat_tags(tmp_path / "tags.npy") == ["guitar", "classical", "no vocals"]
    binary = np.array([[1, 0, 1], [0, 0, 0]])
    np.save(tmp_path / "binary.npy", binary)
    assert P.read_mtat_binary(tmp_path / "binary.npy", 3).shape == (2, 3)
    with pytest.raises(ValueError, match="tag matrix"):
        P.read_mtat_binary(tmp_path / "binary.npy", 50)
    assert P.multi_hot_indices(binary[0]) == [0, 2] and P.multi_hot_indices(binary[1]) == []


def test_mtat_split_refuses_pickles(tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        P.read_mtat_split(tmp_path / "x.npy")


# ---------------------------------------------------------------------------------- MTG-Jamendo

MTG_TSV = ("TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\n"
           "track_0000241\tartist_000005\talbum_000033\t41/241.mp3\t340.1\tgenre---rock\r\n"
           "track_1421614\tartist_421137\talbum_165801\t14/1421614.mp3\t206.4\tgenre---electronic\t"
           "genre---house\tmood/theme---happy\r\n")


def test_mtg_tsv_crlf_and_variable_tag_columns(tmp_path):
    rows = P.parse_mtg_tsv(MTG_TSV)
    assert [r["track_id"] for r in rows] == ["track_0000241", "track_1421614"]
    assert rows[0]["tags"] == ["genre---rock"] and rows[0]["path"] == "41/241.mp3"
    assert rows[1]["tags"] == ["genre---electronic", "genre---house", "mood/theme---happy"]
    assert rows[1]["duration"] == pytest.approx(206.4)
    f = tmp_path / "a.tsv"
    f.write_bytes(MTG_TSV.encode())
    assert P.read_mtg_tsv(f) == rows
    with pytest.raises(ValueError, match="header"):
        P.parse_mtg_tsv("ID\tPATH\n1\t2\n")
    with pytest.raises(ValueError, match="columns"):
        P.parse_mtg_tsv(MTG_TSV.splitlines()[0] + "\ntrack_1\tartist_1\n")


def test_mtg_tag_list_and_low_quality_paths():
    assert P.parse_tag_list("genre---alternative\ngenre---ambient\n\n") == ["genre---alternative", "genre---ambient"]
    assert P.mtg_audio_path("41/241.mp3") == "41/241.mp3"
    assert P.mtg_audio_path("41/241.mp3", low_quality=True) == "41/241.low.mp3"


# ---------------------------------------------------------------------------------- GiantSteps

GS_ANNOTATIONS = ("ID\tMANUAL KEY\tC\n5061\tD# minor\t2\n10981\t-\t0\n16484\tA minor\t1\n"
                  "61578\tC minor / F# minor\t2\n99999\tC# major \t2\n")


def test_giantsteps_mtg_annotations():
    ann = P.parse_giantsteps_mtg_annotations(GS_ANNOTATIONS)
    assert ann[0] == ("5061", "D# minor", 2) and ann[4] == ("99999", "C# major ", 2)
    labels = [P.giantsteps_mtg_label(text, conf) for _, text, conf in ann]
    assert labels[0] == (KEY_NAMES.index("D# minor"), None)
    assert labels[1][0] is None and "confidence 0" in labels[1][1]
    assert labels[2][0] is None and "confidence 1" in labels[2][1]
    assert labels[3][0] is None and "ambiguous" in labels[3][1]
    assert labels[4] == (KEY_NAMES.index("C# major"), None)
    assert P.giantsteps_mtg_label("-", 2)[1].startswith("no key")
    with pytest.raises(ValueError, match="header"):
        P.parse_giantsteps_mtg_annotations("5061\tD# minor\t2\n")
    with pytest.raises(ValueError, match="line 2"):
        P.parse_giantsteps_mtg_annotations("ID\tMANUAL KEY\tC\n5061\tD# minor\t3\n")


def test_giantsteps_file_names_and_md5():
    assert P.giantsteps_id("annotations/key/10089.LOFI.key") == "10089"
    assert P.giantsteps_id("1030011.LOFI.bpm") == "1030011"
    with pytest.raises(ValueError):
        P.giantsteps_id("10089.key")
    assert P.parse_md5_file("4e7abe2aba492646a24971445325ea5b\n") == "4e7abe2aba492646a24971445325ea5b"
    assert P.parse_md5_file("FDD21098F7D2ED6845E593068E96BE7F  5061.LOFI.mp3") == "fdd21098f7d2ed6845e593068e96be7f"
    with pytest.raises(ValueError):
        P.parse_md5_file("not a hash")


def test_split_file_round_trip():
    splits = {"3": "train", "1": "valid", "2": "test"}
    text = P.format_split_file(splits, "seeded 3:1:1\nseed 0")
    assert text.startswith("# seeded 3:1:1\n# seed 0\n1\tvalid\n")
    assert P.parse_split_file(text) == splits
    with pytest.raises(ValueError, match="line 1"):
        P.parse_split_file("1\tholdout\n")
