"""StatisticsGen alone: example counts per split and the label distribution."""

from __future__ import annotations

from tensorflow_data_validation.utils import stats_util
from tfx.types import artifact_utils

from components.image_example_gen import ingest
from models import features


def _feature(split_stats, name: str):
    (feature,) = [f for f in split_stats.features if f.path.step == [name]]
    return feature


def test_counts_per_split_and_label_distribution(statistics, dataset):
    assert artifact_utils.decode_split_names(statistics.split_names) == list(ingest.SPLITS)
    for split in ingest.SPLITS:
        expected = {name: n for name, n in dataset.counts[split].items() if n}
        split_stats = stats_util.load_stats_binary(
            f"{artifact_utils.get_split_uri([statistics], split)}/FeatureStats.pb"
        ).datasets[0]
        assert split_stats.num_examples == sum(expected.values())
        # label_text: exact counts per class name.
        label_text = _feature(split_stats, features.LABEL_TEXT_KEY).string_stats
        assert {v.value: int(v.frequency) for v in label_text.top_values} == expected
        # label: the class index (cool = 0, warm = 1), so its mean is the share of warm.
        label = _feature(split_stats, features.LABEL_KEY).num_stats
        assert (label.min, label.max) == (0 if "cool" in expected else 1, int("warm" in expected))
        assert label.mean == expected.get("warm", 0) / sum(expected.values())
        # Every example has its image.
        image = _feature(split_stats, features.IMAGE_KEY)
        assert image.string_stats.common_stats.num_non_missing == sum(expected.values())
