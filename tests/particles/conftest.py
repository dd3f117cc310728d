from tests.particles.fixtures import generated, model_paths, models  # noqa: F401
