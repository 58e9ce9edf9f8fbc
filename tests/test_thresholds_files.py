"""The CSV/.npy reader of `logitkit thresholds` (``_files.read_table``): nothing guessed."""

import numpy as np
import pytest

from logitkit.thresholds._files import read_table


def table(tmp_path, text, *, header=False, name="t.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return read_table(path, header=header)


def test_a_numeric_first_line_is_data_and_noted_when_integers(tmp_path):
    read = table(tmp_path, "0,1\n0.25,0.75\n")
    np.testing.assert_array_equal(read.data, [[0.0, 1.0], [0.25, 0.75]])
    assert read.first_line_is_data and not read.header
    assert any("first line 0,1 read as data" in note for note in read.notes)
    read = table(tmp_path, "0.5,0.5\n0.25,0.75\n")  # floats: no note needed
    assert read.data.shape == (2, 2) and read.notes == []


def test_header_true_makes_any_first_line_a_header(tmp_path):
    read = table(tmp_path, "0\n1\n2\n", header=True)
    np.testing.assert_array_equal(read.data, [[1.0], [2.0]])
    assert read.header and not read.first_line_is_data
    assert read.notes == [f"{tmp_path / 't.csv'}: line 1 read as a header (--header)"]
    with pytest.raises(ValueError, match="has a header but no data rows"):
        table(tmp_path, "0\n", header=True)


def test_header_true_leaves_npy_files_alone(tmp_path):
    np.save(tmp_path / "a.npy", np.array([0.0, 1.0, 2.0]))
    read = read_table(tmp_path / "a.npy", header=True)
    np.testing.assert_array_equal(read.data, [0.0, 1.0, 2.0])


@pytest.mark.parametrize(("first", "reason"), [
    ("a,b", "non-numeric cell 'a'"),
    (",0", "empty first cell"),
    ('"x, y",1', "non-numeric cell 'x, y'"),
    ("0,b", "non-numeric cell 'b'"),
])
def test_a_first_line_with_text_or_an_empty_first_cell_is_a_header(tmp_path, first, reason):
    read = table(tmp_path, f"{first}\n3,4\n5,6\n")
    assert read.header and any(reason in note for note in read.notes)
    expected = [[4.0], [6.0]] if first.startswith(",") else [[3.0, 4.0], [5.0, 6.0]]
    np.testing.assert_array_equal(read.data, expected)


def test_bom_crlf_and_quoted_numbers(tmp_path):
    read = table(tmp_path, b'\xef\xbb\xbf0.1,"0.9"\r\n 0.2 , 0.8\r\n\r\n')
    np.testing.assert_array_equal(read.data, [[0.1, 0.9], [0.2, 0.8]])
    assert not read.header


@pytest.mark.parametrize("cell", ["1e-3", "-.5", "+2", "7.", "NaN", "-inf", "Infinity"])
def test_number_spellings(tmp_path, cell):
    read = table(tmp_path, f"{cell}\n")
    np.testing.assert_array_equal(read.data, [[float(cell)]])


@pytest.mark.parametrize("cell", ["1_000", "0x10", "1,5", "1.2.3", "--1", "e5"])
def test_not_numbers(tmp_path, cell):
    with pytest.raises(ValueError, match="line 2, column 1: non-numeric cell"):
        table(tmp_path, f'x\n"{cell}"\n')


def test_index_like_first_column_is_kept(tmp_path):
    read = table(tmp_path, "1,0.5\n2,0.25\n3,0.125\n")
    np.testing.assert_array_equal(read.data[:, 0], [1.0, 2.0, 3.0])
    assert read.index_like and any("counts the rows" in note for note in read.notes)
    read = table(tmp_path, "index,p\n7,0.5\n3,0.25\n")  # named: dropped, whatever it holds
    np.testing.assert_array_equal(read.data, [[0.5], [0.25]])
    assert not read.index_like


def test_a_string_index_named_by_the_header_is_dropped_before_parsing(tmp_path):
    read = table(tmp_path, ",a,b\nid-7,0.5,0.5\nid-3,0.25,0.75\n")
    np.testing.assert_array_equal(read.data, [[0.5, 0.5], [0.25, 0.75]])


def test_a_single_column_named_index_is_data(tmp_path):
    read = table(tmp_path, "index\n4\n5\n")
    np.testing.assert_array_equal(read.data, [[4.0], [5.0]])


def test_empty_files(tmp_path):
    with pytest.raises(ValueError, match="is empty"):
        table(tmp_path, "\n\n,,\n")
