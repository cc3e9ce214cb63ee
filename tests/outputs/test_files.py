"""Output file names: only `lfads_output_sess{i}.h5` with a number i counts, in session order."""

from autolfads.outputs.files import output_files, output_path


def test_output_files_are_sorted_by_session_number_and_skip_strays(tmp_path):
    for name in [
        "lfads_output_sess10.h5",
        "lfads_output_sess2.h5",
        "lfads_output_sessX.h5",
        "lfads_output_sess1.h5.tmp",
        "lfads_output_sess3_old.h5",
    ]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in output_files(tmp_path)] == [
        "lfads_output_sess2.h5",
        "lfads_output_sess10.h5",
    ]


def test_output_path_names_the_session(tmp_path):
    assert output_path(tmp_path, 3) == tmp_path / "lfads_output_sess3.h5"
