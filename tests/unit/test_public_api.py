"""The package's public names stay sorted and importable."""

import ddbcdc


def test_all_is_sorted_and_importable() -> None:
    assert list(ddbcdc.__all__) == sorted(ddbcdc.__all__)
    for name in ddbcdc.__all__:
        assert hasattr(ddbcdc, name), name
