from mdp_trt.analysis import ChannelGroup, option_channels


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
