"""Datasets held in memory as uint8 arrays, and a deterministic batch iterator."""
from .cifar10 import DatasetNotFound, cifar10, cifar10_folder
from .folder import (FolderData, UnreadableImagesWarning, folder_classes, image_folder, list_images,
                     load_images)
from .imageset import ImageSet, iterate_batches
from .table import TableWarning, labelled_images, read_labels

__all__ = ["labelled_images", "read_labels", "TableWarning", "ImageSet", "iterate_batches", "cifar10", "cifar10_folder", "DatasetNotFound",
           "image_folder", "folder_classes", "FolderData", "UnreadableImagesWarning", "list_images", "load_images"]
