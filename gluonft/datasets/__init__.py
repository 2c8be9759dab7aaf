"""Datasets held in memory as uint8 arrays, and a deterministic batch iterator."""
from .cifar10 import DatasetNotFound, cifar10, cifar10_folder
from .folder import FolderData, UnreadableImagesWarning, image_folder, list_images, load_images
from .imageset import ImageSet, iterate_batches

__all__ = ["ImageSet", "iterate_batches", "cifar10", "cifar10_folder", "DatasetNotFound",
           "image_folder", "FolderData", "UnreadableImagesWarning", "list_images", "load_images"]
