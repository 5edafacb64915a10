import numpy as np
import pytest

from cpsl_tf import labels


def test_cityscapes_table_matches_cityscapesscripts():
    cs = pytest.importorskip("cityscapesscripts.helpers.labels", reason="cityscapesscripts not installed")
    table = labels.lookup_table("cityscapes", 19)
    for label in cs.labels:
        if label.id < 0:
            continue
        expected = label.trainId if label.trainId not in (-1, 255) else 255
        assert table[label.id] == expected, label.name
    for train_id, name in enumerate(labels.class_names(19)):
        cs_label = cs.trainId2label[train_id]
        assert tuple(labels.palette(19)[train_id]) == cs_label.color
        assert cs_label.name.replace("traffic ", "") == name


def test_subsets_and_synthia_maps():
    assert labels.class_names(16) == (
        "road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign", "vegetation", "sky",
        "person", "rider", "car", "bus", "motorcycle", "bicycle")
    sub = labels.subset_indices(16, 13)
    assert [labels.class_names(16)[i] for i in sub] == list(labels.class_names(13))
    assert "wall" not in labels.class_names(13) and len(sub) == 13
    raw = np.array([[3, 4, 2, 21], [0, 13, 11, 65535]], dtype=np.uint16)
    mapped = labels.map_labels(raw, "synthia", 16)
    np.testing.assert_array_equal(mapped, [[0, 1, 2, 3], [255, 255, 15, 255]])
    # In the 19-class SYNTHIA protocol, id 16 is terrain (trainId 9).
    assert labels.lookup_table("synthia", 19)[16] == 9


def test_gta5_void_ids_are_ignored():
    table = labels.lookup_table("gta5", 19)
    for void in labels.GTA5_VOID_IDS:
        if void >= 0:
            assert table[void] == 255
    mapped = labels.map_labels(np.array([-1, 7, 34, 33]), "gta5")
    np.testing.assert_array_equal(mapped, [255, 0, 255, 18])


def test_round_trip_to_label_ids_and_official_ignore():
    class_map = np.arange(19, dtype=np.uint8)
    assert (labels.map_labels(labels.train_ids_to_label_ids(class_map), "cityscapes") == class_map).all()
    np.testing.assert_array_equal(labels.official_to_project_ignore(np.array([0, 250, 3])), [0, 255, 3])
    assert labels.colorize(np.array([[255]]))[0, 0].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="num_classes"):
        labels.class_names(17)
