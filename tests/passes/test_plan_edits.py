"""Plan edits shared by surgery and masking: padding for grouped convs, grouped weight cuts."""

import numpy as np
import onnx_ir as ir

from mdp_trt.passes.groups import ConstantSlice, CountFix, Layout
from mdp_trt.passes.plan_edits import delete_grouped, physical_keep, zero_channels


def test_physical_keep_pads_every_block_to_the_fullest():
    # 3 blocks of 4: keeps 2, 0 and 1 -> each block keeps 2, the lowest dropped ones added.
    np.testing.assert_array_equal(physical_keep([1, 3, 9], 12, 3), [1, 3, 4, 5, 8, 9])
    np.testing.assert_array_equal(physical_keep([5, 0], 12, 1), [0, 5])
    np.testing.assert_array_equal(physical_keep([0, 4, 8], 12, 3), [0, 4, 8])


def test_layout_elements_follow_offset_part_and_stride():
    part = Layout(axis=1, stride=2, offset=3, first=4, width=2)  # channels 4, 5 at positions 3, 4
    np.testing.assert_array_equal(part.elements(np.array([0, 4, 5, 7])), [6, 7, 8, 9])


def test_count_fix_counts_dropped_elements_in_its_window():
    node = ir.node("Split", [])
    fix = CountFix(node, 1, 0, Layout(axis=1, offset=2, width=6), low=0, high=5)
    # positions 2, 4 inside; 5, 7 outside
    np.testing.assert_array_equal(fix.dropped_elements(np.array([0, 2, 3, 5])), [2, 4])


def test_grouped_cut_removes_each_conv_groups_own_channels():
    weight = np.arange(4 * 2, dtype=np.float32).reshape(4, 2)  # 2 conv groups: rows 0-1, 2-3
    cut = ConstantSlice(ir.node("Conv", []), 1, Layout(axis=1, width=4), consumer=True, conv_groups=2)
    np.testing.assert_array_equal(delete_grouped(weight, cut, np.array([1, 2])), [[0], [2], [5], [7]])
    zeroed = weight.copy()
    zero_channels(zeroed, cut, np.array([1, 2]))
    np.testing.assert_array_equal(zeroed, [[0, 0], [2, 0], [0, 5], [0, 7]])
