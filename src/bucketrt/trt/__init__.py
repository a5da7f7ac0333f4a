"""TensorRT engines of bucketrt exports: optimisation profiles (`profiles`, plain Python) and
building and loading engines with bucketrt's plugin library (`engine`, through Polygraphy)."""
