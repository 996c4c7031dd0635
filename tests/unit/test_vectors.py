import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from culturesim_ray.vectors import as_matrix, culture_table


def rows(n=5, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.parametrize("kind", ["fixed32", "list64", "large_list", "chunked"])
def test_every_list_type_gives_the_rows(kind):
    x = rows()
    if kind == "fixed32":
        col = pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float32).ravel()), 3)
    elif kind == "list64":
        col = pa.array(x.tolist())
    elif kind == "large_list":
        col = pa.array(x.tolist(), pa.large_list(pa.float64()))
    else:
        col = pa.chunked_array([pa.array(x[:2].tolist()), pa.array(x[2:].tolist())])
    out = as_matrix(col, writable=True)
    assert out.dtype == np.float32 and out.shape == (5, 3) and out.flags.writeable
    np.testing.assert_allclose(out, x, rtol=1e-6)


def test_slices_and_empty_columns():
    x = rows(6, 4)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float32).ravel()), 4)
    np.testing.assert_allclose(as_matrix(fixed.slice(2, 3)), x[2:5], rtol=1e-6)
    np.testing.assert_allclose(as_matrix(pa.array(x.tolist()).slice(1, 2)), x[1:3], rtol=1e-6)
    assert as_matrix(fixed.slice(0, 0)).shape == (0, 4)
    assert as_matrix(pa.chunked_array([], pa.list_(pa.float32()))).shape == (0, 0)


def test_bad_rows_are_named():
    with pytest.raises(ValueError, match=r"in\.parquet: mixed vector dimensions \[2, 3\]; "
                                         r"row 11 has 3 vs 2 in row 10"):
        as_matrix(pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]]), "in.parquet", row_offset=10)
    with pytest.raises(ValueError, match=r"f: row 1 has no vector \(2 such rows\)"):
        as_matrix(pa.array([[1.0, 2.0], None, None]), "f")
    fixed = pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2.0, 3.0, 4.0]), 2)
    with_null = pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2.0, 3.0, 4.0]), 2,
                                                  mask=pa.array([False, True]))
    assert as_matrix(fixed).shape == (2, 2)
    with pytest.raises(ValueError, match="row 1 has no vector"):
        as_matrix(with_null)
    with pytest.raises(ValueError, match="vectors must be a list column, got double"):
        as_matrix(pa.array([1.0, 2.0]))


def test_fixed_float32_is_a_view_unless_asked_to_be_writable():
    buf = pa.array(np.arange(6, dtype=np.float32))
    col = pa.FixedSizeListArray.from_arrays(buf, 3)
    view = as_matrix(col)
    assert not view.flags.writeable  # no copy in the streaming readers
    own = as_matrix(col, writable=True)
    own[0, 0] = 9.0
    assert as_matrix(col)[0, 0] == 0.0 and own.flags.writeable


def test_culture_table_round_trips_heads_of_different_widths():
    general, theme = rows(3, 4, seed=1), rows(2, 2, seed=2)
    table = culture_table({"general": (["a", "b", "c"], general), "food": (["b", "c"], theme)})
    assert table.column_names == ["culture", "head", "vector"]
    assert table.column("culture").to_pylist() == ["a", "b", "c", "b", "c"]
    assert table.column("head").to_pylist() == ["general"] * 3 + ["food"] * 2
    assert table.schema.field("vector").type == pa.list_(pa.float32())
    for head, want in (("general", general), ("food", theme)):
        got = as_matrix(table.filter(pc.equal(table.column("head"), head))["vector"])
        np.testing.assert_allclose(got, want, rtol=1e-6)  # float32 of the float64 input
    assert culture_table({}).num_rows == 0
    with pytest.raises(ValueError, match=r"head 'food': 3 cultures for vectors of shape \(2, 2\)"):
        culture_table({"food": (["a", "b", "c"], theme)})
    empty = culture_table({"general": ([], np.zeros(0)), "food": (["b"], theme[:1])})
    assert empty.column("culture").to_pylist() == ["b"] and empty.num_rows == 1
