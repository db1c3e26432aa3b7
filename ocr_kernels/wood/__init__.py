"""W-OoD (Lee et al., CVPR 2022): distances to centroids, the distance loss, K-means."""
from .api import centroid_distances, class_centroids, wood_classifier_loss, wood_distance_loss
from .kmeans import kmeans
from .module import WOoDLoss

__all__ = ["WOoDLoss", "centroid_distances", "class_centroids", "kmeans", "wood_classifier_loss",
           "wood_distance_loss"]
