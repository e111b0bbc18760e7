"""Which MatMul nodes the mixed int8 export leaves in fp32, and what a killed export leaves behind."""

from model.onnx_runtime import fp32_nodes

NODES = [
    f"/bert/encoder/layer.{i}/{part}/MatMul"
    for i in range(12)
    for part in ("attention/self/query", "attention/self", "attention/output/dense", "intermediate/dense", "output/dense")
] + ["/classifier/MatMul"]


def test_the_first_blocks_feed_forward_layers_stay_fp32():
    assert fp32_nodes(NODES, blocks=2) == [
        "/bert/encoder/layer.0/intermediate/dense/MatMul", "/bert/encoder/layer.0/output/dense/MatMul",
        "/bert/encoder/layer.1/intermediate/dense/MatMul", "/bert/encoder/layer.1/output/dense/MatMul",
    ]


def test_block_numbers_are_read_whole_and_other_graphs_keep_nothing():
    assert len(fp32_nodes(NODES, blocks=11)) == 22  # layer.10 and layer.11 are not layer.1
    assert fp32_nodes(NODES, blocks=0) == []
    assert fp32_nodes(["/distilbert/transformer/layer.0/ffn/lin1/MatMul"]) == []  # other naming: all int8


def test_a_killed_export_s_leftovers_go_and_another_export_under_way_stays(tmp_path):
    from model.onnx_runtime import CACHE_DIR, remove_partial_export

    cache = tmp_path / CACHE_DIR
    killed, running = cache / ".export-123-a1b2", cache / ".export-1234-c3d4"
    for partial in (killed, running):
        partial.mkdir(parents=True)
        (partial / "model.onnx").write_bytes(b"half")
    remove_partial_export(tmp_path, 123)
    assert not killed.exists() and running.exists()
