import pytest

from mdp_trt.analysis import Analysis, ChannelGroup, limit_options, option_channels
from mdp_trt.errors import InputError


def test_options_are_units_of_the_group_size_capped_at_the_width():
    assert option_channels(64, 16) == [0, 16, 32, 48, 64]
    assert option_channels(40, 16) == [0, 16, 32, 40]
    assert option_channels(64, 128) == [0, 64]
    assert option_channels(64, 16, prunable=False) == [0, 64]


def test_grouped_conv_groups_keep_equal_counts_per_conv_group():
    group = ChannelGroup(0, "g", 96, producers=("a",), consumers=(), divisions=3)
    # a 16-channel unit is rounded up to 18, a multiple of the 3 conv groups
    assert group.options(16) == [0, 18, 36, 54, 72, 90, 96]
    assert all(c % 3 == 0 for c in group.options(16))


def _analysis(*groups):
    return Analysis(model="m.onnx", input_shape=(1, 3, 8, 8), layers=(), groups=groups, blocks=())


def test_max_options_cuts_only_the_wide_groups_in_coarser_multiples_of_the_unit():
    wide = ChannelGroup(0, "fc", 4096, producers=("a",), consumers=())
    narrow = ChannelGroup(1, "stem", 64, producers=("b",), consumers=())
    grouped = ChannelGroup(2, "dw", 96, producers=("c",), consumers=(), divisions=3)
    limited = limit_options(_analysis(wide, narrow, grouped), 64, 16)
    fc, stem, dw = limited.groups
    assert fc.options(64) == list(range(0, 4097, 256))  # 64 units of 64 -> 16 units of 256
    assert stem.options(64) == [0, 64]
    # 96 channels in units of 66 (64 rounded up to 3 conv groups) are 2 options: unchanged
    assert dw.options(64) == [0, 66, 96]
    assert len(limit_options(_analysis(wide), 16, 5).groups[0].options(16)) - 1 <= 5
    assert limit_options(_analysis(wide), 64, None).groups[0].options(64) == wide.options(64)


def test_max_options_survives_saving_the_analysis(tmp_path):
    limited = limit_options(_analysis(ChannelGroup(0, "fc", 512, producers=("a",), consumers=())), 8, 4)
    limited.save(tmp_path / "a.json")
    assert Analysis.load(tmp_path / "a.json").groups[0].options(8) == [0, 128, 256, 384, 512]


def test_max_options_below_one_is_refused():
    with pytest.raises(InputError, match="--max-options 0"):
        limit_options(_analysis(), 8, 0)
