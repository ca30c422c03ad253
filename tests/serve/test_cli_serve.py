"""`dcnn serve` refuses bad options, a missing model and a busy port with one line, before serving.
(The command serving for real is the `server` fixture: `dcnn serve` in its own process.)"""

from __future__ import annotations

import socket

from tests.test_cli import assert_user_error, dcnn_in_process


def test_serve_refuses_bad_input_with_one_line(served_run, tmp_path):
    run = str(served_run)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        for args, fragment in [
            ([str(tmp_path / "missing"), "--port", "0"], "not found; give a run directory or a .safetensors file"),
            ([run, "--port", str(port)], f"cannot listen on 127.0.0.1:{port}"),
            ([run, "--port", "70000"], "--port 70000: give a port from 1 to 65535"),
            ([run, "--host", "999.1.1.1", "--port", "0"], "cannot listen on 999.1.1.1:0"),
            ([run, "--max-upload-mb", "0"], "--max-upload-mb 0.0: give the largest upload in MiB"),
            ([run, "--port", "0", "--max-pixels", "0"], "max_pixels must be at least 1, not 0"),
            ([run, "--port", "0", "--max-batch", "0", "--batch-window-ms", "-1"],
             "max_batch must be at least 1, not 0; batch_window_ms must be at least 0, not -1.0"),
        ]:
            assert_user_error(dcnn_in_process("serve", *args), fragment)
