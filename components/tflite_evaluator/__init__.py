"""TFLiteEvaluator (component.py: spec, executor.py: the work and the rule).

The gate's defaults are defined here, where the component and PipelineConfig's knobs both
read them, without importing TensorFlow. TFLITE_MIN_AGREEMENT's comes from
bench/deploy_bench.py on 500 real held-out photos with pretrained EfficientNet-Lite0 at 224
px: the float32 file agreed with the SavedModel on 0.994 of them, the int8 file on 0.968
(accuracy 0.854 against 0.870, a drop the accuracy rule judges); a broken conversion (a
corrupted weight, a wrong input scaling) agrees on far fewer.
"""

DEFAULT_MIN_AGREEMENT = 0.95  # TFLITE_MIN_AGREEMENT: top-1 agreement with the SavedModel
DEFAULT_MAX_DROP = 0.01  # TFLITE_MAX_DROP: accuracy drop allowed beyond noise
