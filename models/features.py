"""Feature keys, signature names and the default backbone: the one place each name is defined.

Ingest writes these keys into tf.Examples, Transform reads and writes them, the
Trainer and the export signatures use them, and the Evaluator is configured with
them. Everything else imports from here so a rename is a one-line change. No TensorFlow
here: pipeline/configs.py imports this module and must stay free of it.
"""

# The BACKBONE knob's default: a row of the table in models/backbones.py.
DEFAULT_BACKBONE = "resnet50"

# Raw tf.Example features written by ingest (components/image_example_gen/ingest.py).
IMAGE_KEY = "image_raw"  # the original encoded file bytes, never re-encoded
IMAGE_FORMAT_KEY = "image_format"  # one of SUPPORTED_FORMATS
HEIGHT_KEY = "height"
WIDTH_KEY = "width"
LABEL_KEY = "label"  # int64 class index into the labels file
LABEL_TEXT_KEY = "label_text"  # the class (folder) name
SOURCE_PATH_KEY = "source_path"  # path relative to the image folder

# Formats that tf.io.decode_image decodes, so Transform and serving can read them.
SUPPORTED_FORMATS = ("jpeg", "png", "gif", "bmp")

# Transformed features (preprocessing_fn output).
TRANSFORMED_IMAGE_KEY = "image"  # float32 [size, size, 3], backbone-preprocessed

# Export signatures and their tensor names.
SERVING_SIGNATURE = "serving_default"  # encoded image bytes in
TF_EXAMPLE_SIGNATURE = "serving_tf_example"  # serialized tf.Example in (Evaluator)
CLASSIFY_SIGNATURE = "classify"  # TF Serving's Classify API (tf.Example in)
SERVING_INPUT_KEY = "image_bytes"  # TF Serving's REST maps {"b64": ...} onto a DT_STRING input
TF_EXAMPLE_INPUT_KEY = "examples"
PROBABILITIES_KEY = "probabilities"
CLASS_INDEX_KEY = "class_index"
CLASS_NAME_KEY = "class_name"

# A SavedModel's folder for files beside the model, which TF Serving ignores (except its
# warm-up requests): the training metadata and, copied by the Pusher, the model card.
ASSETS_EXTRA_DIR = "assets.extra"
TRAINING_METADATA_FILE = ASSETS_EXTRA_DIR + "/training_metadata.json"
