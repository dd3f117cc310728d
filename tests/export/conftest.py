from tests.particles.fixtures import generated, model_paths, models, oriented_generated, oriented_model_paths  # noqa: F401
