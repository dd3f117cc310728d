from tests.particles.fixtures import (  # noqa: F401
    generated, model_paths, models, oriented_generated, oriented_model_paths)
